"""What the adapter tests configure: demo credentials by variable name, fast timeouts,
and the upstream variants they build (a module of its own, so tests can import it)."""

from __future__ import annotations

from typing import Any

from demo.upstreams.credentials import (
    DEMO_HUBSPOT_CLIENT_ID,
    DEMO_HUBSPOT_CLIENT_SECRET,
    DEMO_HUBSPOT_TOKEN,
    DEMO_SEGMENT_SPACE,
    DEMO_SEGMENT_TOKEN,
    DEMO_SHOPIFY_TOKEN,
    DEMO_SOAP_PASSWORD,
    DEMO_SOAP_USER,
)

SIZE = 300

ENV = {
    "HUBSPOT_TOKEN": DEMO_HUBSPOT_TOKEN,
    "HUBSPOT_CLIENT_ID": DEMO_HUBSPOT_CLIENT_ID,
    "HUBSPOT_CLIENT_SECRET": DEMO_HUBSPOT_CLIENT_SECRET,
    "SOAP_CRM_USER": DEMO_SOAP_USER,
    "SOAP_CRM_PASSWORD": DEMO_SOAP_PASSWORD,
    "SHOPIFY_TOKEN": DEMO_SHOPIFY_TOKEN,
    "SEGMENT_TOKEN": DEMO_SEGMENT_TOKEN,
}

FAST = {
    "timeout_s": 0.3,
    "deadline_s": 1.0,
    "retries": 2,
    "backoff_base_s": 0.01,
    "backoff_max_s": 0.05,
    # High enough that fault tests never trip it by accident; breaker tests lower it.
    "breaker": {"failure_threshold": 50, "reset_timeout_s": 0.3},
    # Not paced: a suite's calls come far faster than an upstream's published limit
    # allows, and the samples here only announce theirs (tests of pacing turn it on).
    "rate_limit": None,
}

# Variants the tests build, by the name they go by: (sample service, table).
VARIANTS: dict[str, tuple[str, dict[str, Any]]] = {
    "hubspot": (
        "hubspot",
        {
            "kind": "hubspot",
            "auth": {"mode": "bearer", "token_env": "HUBSPOT_TOKEN"},
        },
    ),
    "hubspot_oauth": (
        "hubspot",
        {
            "kind": "hubspot",
            "auth": {
                "mode": "oauth2_client_credentials",
                "client_id_env": "HUBSPOT_CLIENT_ID",
                "client_secret_env": "HUBSPOT_CLIENT_SECRET",
            },
        },
    ),
    "soap_crm": (
        "soap_crm",
        {
            "kind": "soap_crm",
            "auth": {
                "mode": "basic",
                "username_env": "SOAP_CRM_USER",
                "password_env": "SOAP_CRM_PASSWORD",
            },
        },
    ),
    "shopify": (
        "shopify",
        {
            "kind": "shopify",
            "auth": {"token_env": "SHOPIFY_TOKEN"},
            "storefront_url": "https://shop.example",
        },
    ),
    "shopify_graphql": (
        "shopify",
        {
            "kind": "shopify",
            "api": "graphql",
            "auth": {"token_env": "SHOPIFY_TOKEN"},
            "storefront_url": "https://shop.example",
        },
    ),
    "segment": (
        "segment",
        {
            "kind": "segment",
            "auth": {"mode": "basic", "username_env": "SEGMENT_TOKEN"},
            "space_id": DEMO_SEGMENT_SPACE,
        },
    ),
}
