"""The credentials the sample upstreams accept, with demo defaults.

These are not secrets: they only open loopback sample servers. They live in one
place so the demo, the tests and the benchmark configure the adapters alike.
"""

from __future__ import annotations

from dataclasses import dataclass

# Shaped like the real thing (HubSpot private-app token, Shopify Admin token,
# Segment space id) so adapter-side validation written for production passes.
DEMO_HUBSPOT_TOKEN = "pat-na1-0000demo-0000-4000-8000-000000000001"
DEMO_HUBSPOT_CLIENT_ID = "3f1d2c0e-demo-4b5a-9c6d-000000000002"
DEMO_HUBSPOT_CLIENT_SECRET = "demo-hubspot-client-secret-0003"
DEMO_SHOPIFY_TOKEN = "shpat_00000000000000000000000000demo"
DEMO_SHOPIFY_SHOP = "gateway-demo.myshopify.com"
DEMO_SEGMENT_TOKEN = "demo-segment-profiles-token-0004"
DEMO_SEGMENT_SPACE = "spa_gatewayDemo0001"
DEMO_SOAP_USER = "gateway"
DEMO_SOAP_PASSWORD = "demo-soap-password-0005"

# HubSpot's own default lifetime for an OAuth access token.
DEFAULT_TOKEN_TTL_S = 1800


@dataclass(frozen=True, slots=True)
class SampleCredentials:
    """What each sample service accepts; the defaults are the demo constants."""

    hubspot_token: str = DEMO_HUBSPOT_TOKEN
    hubspot_client_id: str = DEMO_HUBSPOT_CLIENT_ID
    hubspot_client_secret: str = DEMO_HUBSPOT_CLIENT_SECRET
    hubspot_token_ttl_s: float = DEFAULT_TOKEN_TTL_S
    shopify_token: str = DEMO_SHOPIFY_TOKEN
    segment_token: str = DEMO_SEGMENT_TOKEN
    segment_space: str = DEMO_SEGMENT_SPACE
    soap_user: str = DEMO_SOAP_USER
    soap_password: str = DEMO_SOAP_PASSWORD
