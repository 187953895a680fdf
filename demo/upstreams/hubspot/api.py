"""Sample HubSpot CRM v3 contacts API: read, batch read, search, OAuth tokens.

Answers like HubSpot does: property values as strings, ISO times with
milliseconds, 207 for partial batch results, error bodies with a category and a
correlation id. Search supports the filters a sync needs (``lastmodifieddate
GTE``, ``email EQ``) and the usual comparison operators on any property.
"""

from __future__ import annotations

import secrets
import threading
import time
import uuid
from collections.abc import Sequence
from datetime import UTC, datetime
from functools import lru_cache, partial
from typing import Any
from urllib.parse import parse_qs

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute, Route

from demo.people.population import Person
from demo.upstreams.credentials import SampleCredentials
from demo.upstreams.hubspot.search import SearchError, matches_groups, sort_key, sortable
from demo.upstreams.quota import HUBSPOT_LIMIT, Admission, hubspot_headers
from demo.upstreams.service import (
    SampleService,
    json_body,
    json_response,
    same_secret,
    seconds_header,
)

DEFAULT_PROPERTIES = (
    "createdate",
    "email",
    "firstname",
    "hs_object_id",
    "lastmodifieddate",
    "lastname",
)
MAX_BATCH = 100
MAX_SEARCH_LIMIT = 200


def hubspot_time(moment: datetime) -> str:
    return (
        moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.") + f"{moment.microsecond // 1000:03d}Z"
    )


@lru_cache(maxsize=8192)
def contact_properties(person: Person) -> dict[str, str | None]:
    """Every property of the person's contact, HubSpot-style (strings or null)."""
    return {
        "email": person.email,
        "firstname": person.first_name,
        "lastname": person.last_name,
        "phone": person.phone,
        "company": person.company,
        "jobtitle": person.job_title,
        "city": person.city,
        "country": person.country,
        "lifecyclestage": person.lifecycle_stage,
        "hubspot_owner_id": person.owner_id,
        "date_of_birth": person.date_of_birth.isoformat(),
        "hs_language": person.locale.lower(),
        "createdate": hubspot_time(person.created_at),
        "lastmodifieddate": hubspot_time(person.updated_at),
        "hs_object_id": person.hubspot_id,
        "consent_email_marketing": str(person.email_marketing_consent).lower(),
        "consent_personalisation": str(person.personalisation_consent).lower(),
        "consent_analytics": str(person.analytics_consent).lower(),
    }


def _error(status: int, category: str, message: str, **extra: Any) -> Response:
    body = {
        "status": "error",
        "message": message,
        "correlationId": str(uuid.uuid4()),
        "category": category,
        **extra,
    }
    return json_response(body, status)


class HubSpotSample(SampleService):
    """HubSpot CRM v3 contacts over the sample population."""

    name = "hubspot"
    rate_limit = HUBSPOT_LIMIT

    def __init__(
        self,
        people: Sequence[Person],
        credentials: SampleCredentials | None = None,
        *,
        seed: int = 0,
    ) -> None:
        self.credentials = credentials or SampleCredentials()
        self.token_ttl_s = self.credentials.hubspot_token_ttl_s
        self._tokens: dict[str, float] = {}
        self._tokens_lock = threading.Lock()
        self._by_id = {p.hubspot_id: p for p in people}
        self._by_email = {p.email.lower(): p for p in people}
        super().__init__(people, seed=seed)

    def routes(self) -> list[BaseRoute]:
        return [
            Route("/oauth/v1/token", self._token, methods=["POST"]),
            Route("/crm/v3/objects/contacts/batch/read", self._batch_read, methods=["POST"]),
            Route("/crm/v3/objects/contacts/search", self._search, methods=["POST"]),
            Route("/crm/v3/objects/contacts/{id}", self._get_contact, methods=["GET"]),
        ]

    def control_routes(self) -> list[BaseRoute]:
        return [Route("/_sample/oauth", self._oauth_control, methods=["GET", "PUT", "DELETE"])]

    def rate_limited_response(self, retry_after_s: float) -> Response:
        response = json_response(
            {
                "status": "error",
                "message": "You have reached your secondly limit.",
                "errorType": "RATE_LIMIT",
                "correlationId": str(uuid.uuid4()),
                "policyName": "SECONDLY",
            },
            429,
        )
        response.headers["Retry-After"] = seconds_header(retry_after_s)
        return response

    def limit_headers(self, admission: Admission) -> list[tuple[str, str]]:
        window = self.window
        return hubspot_headers(admission, window.limit.per_s if window else 10.0)

    def error_response(self, status: int) -> Response:
        return _error(
            status,
            "INTERNAL_ERROR" if status >= 500 else "VALIDATION_ERROR",
            "The service is temporarily unavailable."
            if status >= 500
            else "The request was rejected.",
        )

    def not_found_response(self) -> Response:
        return _error(404, "OBJECT_NOT_FOUND", "resource not found")

    # OAuth --------------------------------------------------------------------
    def issue_token(self) -> str:
        token = f"CN{secrets.token_urlsafe(24)}"
        with self._tokens_lock:
            self._tokens[token] = time.monotonic() + self.token_ttl_s
        return token

    def expire_tokens(self) -> None:
        """Make every token issued so far expired (the static token stays valid)."""
        with self._tokens_lock:
            self._tokens = dict.fromkeys(self._tokens, 0.0)

    async def _token(self, request: Request) -> Response:
        # Parsed here rather than by request.form(), which needs python-multipart.
        form = {
            k: v[0] for k, v in parse_qs((await request.body()).decode("utf-8", "replace")).items()
        }
        if form.get("grant_type") != "client_credentials":
            return json_response(
                {
                    "status": "BAD_GRANT_TYPE",
                    "message": "unsupported grant_type",
                    "correlationId": str(uuid.uuid4()),
                },
                400,
            )
        if not (
            same_secret(form.get("client_id"), self.credentials.hubspot_client_id)
            and same_secret(form.get("client_secret"), self.credentials.hubspot_client_secret)
        ):
            return json_response(
                {
                    "status": "BAD_CLIENT_ID",
                    "message": "missing or unknown client id or secret",
                    "correlationId": str(uuid.uuid4()),
                },
                400,
            )
        return json_response(
            {
                "access_token": self.issue_token(),
                "token_type": "bearer",
                "expires_in": int(self.token_ttl_s),
            }
        )

    async def _oauth_control(self, request: Request) -> Response:
        if request.method == "PUT":
            try:
                body = await json_body(request)
                self.token_ttl_s = float(body["expires_in"])
            except (ValueError, TypeError, KeyError):
                return json_response({"error": 'expected {"expires_in": seconds}'}, 400)
        elif request.method == "DELETE":
            self.expire_tokens()
        return json_response({"expires_in": self.token_ttl_s, "issued": len(self._tokens)})

    def _refusal(self, request: Request) -> Response | None:
        scheme, _, token = request.headers.get("authorization", "").partition(" ")
        if scheme.lower() != "bearer" or not token:
            return _error(401, "INVALID_AUTHENTICATION", "Authentication credentials not found.")
        if same_secret(token, self.credentials.hubspot_token):
            return None
        with self._tokens_lock:
            expiry = self._tokens.get(token)
        if expiry is None:
            return _error(401, "INVALID_AUTHENTICATION", "The access token provided is invalid.")
        if expiry <= time.monotonic():
            return _error(
                401, "EXPIRED_AUTHENTICATION", "The OAuth token used to make this call expired."
            )
        return None

    # Contacts -----------------------------------------------------------------
    def _find(self, key: str, id_property: str | None) -> Person | None:
        if id_property in (None, "", "hs_object_id"):
            return self._by_id.get(key)
        if id_property == "email":
            return self._by_email.get(key.strip().lower())
        return None

    def _record(self, person: Person, properties: Sequence[str] | None) -> dict[str, Any]:
        everything = contact_properties(person)
        wanted = properties or DEFAULT_PROPERTIES
        return {
            "id": person.hubspot_id,
            # Unknown names are left out, as HubSpot does; known ones may be null.
            "properties": {name: everything[name] for name in wanted if name in everything},
            "createdAt": everything["createdate"],
            "updatedAt": everything["lastmodifieddate"],
            "archived": False,
        }

    async def _get_contact(self, request: Request) -> Response:
        if (refusal := self._refusal(request)) is not None:
            return refusal
        person = self._find(request.path_params["id"], request.query_params.get("idProperty"))
        if person is None:
            return self.not_found_response()
        raw = ",".join(request.query_params.getlist("properties"))
        names = [name for name in raw.split(",") if name]
        return json_response(self._record(person, names))

    async def _batch_read(self, request: Request) -> Response:
        if (refusal := self._refusal(request)) is not None:
            return refusal
        started = hubspot_time(datetime.now(UTC))
        try:
            body = await json_body(request)
            inputs = [str(item["id"]) for item in body["inputs"]]
            names = [str(name) for name in body.get("properties") or []]
            id_property = body.get("idProperty")
        except (ValueError, KeyError, TypeError):
            return _error(
                400,
                "VALIDATION_ERROR",
                "Invalid input JSON on line 1: expected "
                '{"inputs": [{"id": ...}], "properties": [...]}',
            )
        if len(inputs) > MAX_BATCH:
            return _error(400, "VALIDATION_ERROR", f"Batch input is limited to {MAX_BATCH} inputs.")
        results, missing, seen = [], [], set()
        for key in inputs:
            person = self._find(key, id_property)
            if person is None:
                missing.append(key)
            elif person.hubspot_id not in seen:
                seen.add(person.hubspot_id)
                results.append(self._record(person, names))
        answer: dict[str, Any] = {
            "status": "COMPLETE",
            "results": results,
            "startedAt": started,
            "completedAt": hubspot_time(datetime.now(UTC)),
        }
        if not missing:
            return json_response(answer)
        answer["numErrors"] = 1
        answer["errors"] = [
            {
                "status": "error",
                "category": "OBJECT_NOT_FOUND",
                "message": "Could not get some CONTACT objects, they may be deleted or not exist.",
                "context": {"ids": missing},
            }
        ]
        return json_response(answer, 207)

    async def _search(self, request: Request) -> Response:
        if (refusal := self._refusal(request)) is not None:
            return refusal
        try:
            body = await json_body(request)
            groups = body.get("filterGroups") or []
            sorts = body.get("sorts") or []
            names = [str(name) for name in body.get("properties") or []]
            limit = int(body.get("limit", 10))
            offset = int(body.get("after") or 0)
            matching = [p for p in self.people if matches_groups(contact_properties(p), groups)]
            for sort in reversed(sorts):  # stable sorts: the first sort key wins
                field, descending = sort_key(sort)
                matching.sort(key=partial(_sortable_by, field), reverse=descending)
        except (ValueError, TypeError, AttributeError, SearchError) as exc:
            return _error(400, "VALIDATION_ERROR", str(exc) or "Invalid search request.")
        if not 1 <= limit <= MAX_SEARCH_LIMIT or offset < 0:
            return _error(
                400, "VALIDATION_ERROR", f"limit must be between 1 and {MAX_SEARCH_LIMIT}."
            )
        page = matching[offset : offset + limit]
        # Search answers always carry the bookkeeping properties, like HubSpot's.
        wanted = list(
            dict.fromkeys(
                [*(names or DEFAULT_PROPERTIES), "createdate", "lastmodifieddate", "hs_object_id"]
            )
        )
        answer: dict[str, Any] = {
            "total": len(matching),
            "results": [self._record(p, wanted) for p in page],
        }
        if offset + limit < len(matching):
            after = str(offset + limit)
            answer["paging"] = {"next": {"after": after, "link": f"?after={after}"}}
        return json_response(answer)


def _sortable_by(field: str, person: Person) -> tuple[int, Any]:
    return sortable(contact_properties(person), field)
