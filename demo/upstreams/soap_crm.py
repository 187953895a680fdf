"""Sample SOAP CRM: the contact service described by ``adapters/wsdl/contacts.wsdl``.

SOAP 1.1, document/literal wrapped, HTTP basic auth. Served with Starlette and
lxml rather than a SOAP framework, which keeps the wire format in plain sight:
what the adapter's zeep client must accept is exactly what is built here.
"""

from __future__ import annotations

from bisect import bisect_left
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from importlib.resources import files
from pathlib import Path
from typing import Any

from lxml import etree  # type: ignore[import-untyped]
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute, Route
from starlette.types import Scope

from demo.people.population import Person
from demo.upstreams.credentials import SampleCredentials
from demo.upstreams.drift import pascal_case
from demo.upstreams.paging import decode_cursor, encode_cursor
from demo.upstreams.service import SampleService, basic_credentials, same_secret, seconds_header

WSDL_PATH = Path(str(files("adapters").joinpath("wsdl", "contacts.wsdl")))
NAMESPACE = "urn:gateway:sample:contacts:v1"
SOAP_ENV = "http://schemas.xmlsoap.org/soap/envelope/"
ENDPOINT = "/soap/contacts"
XML_TYPE = "text/xml; charset=utf-8"
MAX_IDS = 100
MAX_RESULTS = 1000
_WSDL_ADDRESS = "http://127.0.0.1:8701/soap/contacts"
# Never fetch DTDs or expand entities from a request body.
_PARSER = etree.XMLParser(resolve_entities=False, no_network=True, huge_tree=False)


def soap_id(person: Person) -> str:
    return f"C-{person.index:06d}"


def _time(moment: datetime) -> str:
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _q(name: str) -> str:
    return f"{{{NAMESPACE}}}{name}"


def _contact_fields(person: Person) -> list[tuple[str, str]]:
    # In the WSDL's sequence order: document/literal is order-sensitive.
    return [
        ("id", soap_id(person)),
        ("email", person.email),
        ("firstName", person.first_name),
        ("lastName", person.last_name),
        ("phone", person.phone),
        ("company", person.company),
        ("jobTitle", person.job_title),
        ("city", person.city),
        ("country", person.country),
        ("lifecycleStage", person.lifecycle_stage),
        ("ownerId", person.owner_id),
        ("dateOfBirth", person.date_of_birth.isoformat()),
        ("language", person.locale),
        ("emailMarketingConsent", str(person.email_marketing_consent).lower()),
        ("personalisationConsent", str(person.personalisation_consent).lower()),
        ("analyticsConsent", str(person.analytics_consent).lower()),
        ("createdAt", _time(person.created_at)),
        ("updatedAt", _time(person.updated_at)),
    ]


def _append_contact(parent: etree._Element, tag: str, person: Person) -> None:
    contact = etree.SubElement(parent, _q(tag))
    for name, value in _contact_fields(person):
        etree.SubElement(contact, _q(name)).text = value


def _envelope() -> tuple[etree._Element, etree._Element]:
    envelope = etree.Element(f"{{{SOAP_ENV}}}Envelope", nsmap={"soap": SOAP_ENV, "tns": NAMESPACE})
    return envelope, etree.SubElement(envelope, f"{{{SOAP_ENV}}}Body")


def _xml(envelope: etree._Element, status: int = 200) -> Response:
    body = etree.tostring(envelope, xml_declaration=True, encoding="utf-8")
    return Response(body, status_code=status, media_type=XML_TYPE)


def soap_fault(code: str, message: str) -> Response:
    """A SOAP 1.1 Fault; HTTP 500 as SOAP 1.1 over HTTP requires."""
    envelope, body = _envelope()
    fault = etree.SubElement(body, f"{{{SOAP_ENV}}}Fault")
    etree.SubElement(fault, "faultcode").text = f"soap:{code}"
    etree.SubElement(fault, "faultstring").text = message
    return _xml(envelope, 500)


class _BadRequest(Exception):
    """A request the service answers with a soap:Client InvalidArgument fault."""


def _child_text(operation: etree._Element, name: str, required: bool = True) -> str | None:
    node = operation.find(_q(name))
    if node is None or node.text is None:
        if required:
            raise _BadRequest(f"missing {name}")
        return None
    return str(node.text).strip()


class SoapCrmSample(SampleService):
    """The SOAP contact service over the sample population."""

    name = "soap_crm"
    counts_operations = True

    def __init__(
        self,
        people: Sequence[Person],
        credentials: SampleCredentials | None = None,
        *,
        seed: int = 0,
    ) -> None:
        self.credentials = credentials or SampleCredentials()
        self._by_email = {p.email.lower(): p for p in people}
        self._wsdl = WSDL_PATH.read_text(encoding="utf-8")
        self._changes = sorted(people, key=lambda p: (p.updated_at, p.index))
        self._change_times = [p.updated_at for p in self._changes]
        super().__init__(people, seed=seed)

    def routes(self) -> list[BaseRoute]:
        return [Route(ENDPOINT, self._endpoint, methods=["GET", "POST"])]

    # Knob answers: what an HTTP front (load balancer, gateway) in front of a SOAP
    # service says, i.e. not SOAP, so zeep reports a TransportError with the status.
    def rate_limited_response(self, retry_after_s: float) -> Response:
        return Response(
            "Too Many Requests",
            429,
            {"Retry-After": seconds_header(retry_after_s)},
            media_type="text/plain",
        )

    def error_response(self, status: int) -> Response:
        return Response(
            "Service Unavailable" if status == 503 else "Upstream failure",
            status,
            media_type="text/plain",
        )

    def not_found_response(self) -> Response:
        return Response("Not Found", 404, media_type="text/plain")

    def soap_fault_response(self) -> Response:
        return soap_fault("Server", "ServiceUnavailable: the contact store is not responding")

    def drift(self, body: bytes) -> bytes:
        """Rename every element inside the SOAP Body (``contact`` -> ``Contact``) and
        break the booleans: well-formed XML that no longer fits the WSDL."""
        try:
            root = etree.fromstring(body, _PARSER)
        except etree.XMLSyntaxError:
            return body
        soap_body = root.find(f"{{{SOAP_ENV}}}Body")
        for node in soap_body.iterdescendants() if soap_body is not None else ():
            if isinstance(node.tag, str) and node.tag.startswith(f"{{{NAMESPACE}}}"):
                node.tag = _q(pascal_case(etree.QName(node).localname))
                if node.text in ("true", "false"):
                    node.text = "yes" if node.text == "true" else "no"
        return bytes(etree.tostring(root, xml_declaration=True, encoding="utf-8"))

    def operation_of(self, scope: Scope) -> str | None:
        # From the SOAPAction header, so that calls answered by a knob before the
        # body is read are counted too.
        if scope["method"] != "POST":
            return None
        for key, value in scope["headers"]:
            if key == b"soapaction":
                action = value.decode("latin-1").strip('" ')
                return action.rsplit("/", 1)[-1] or "<none>"
        return "<none>"

    def _person(self, contact_id: str) -> Person | None:
        prefix, _, digits = contact_id.partition("-")
        if prefix != "C" or len(digits) != 6 or not digits.isdigit():
            return None
        index = int(digits)
        return self.people[index] if index < len(self.people) else None

    async def _endpoint(self, request: Request) -> Response:
        if request.method == "GET":
            if "wsdl" not in {key.lower() for key in request.query_params}:
                return Response("Method Not Allowed", 405, media_type="text/plain")
            base = str(request.base_url).rstrip("/")
            return Response(
                self._wsdl.replace(_WSDL_ADDRESS, f"{base}{ENDPOINT}"), media_type=XML_TYPE
            )
        given = basic_credentials(request)
        if given is None or not (
            same_secret(given[0], self.credentials.soap_user)
            and same_secret(given[1], self.credentials.soap_password)
        ):
            return Response(
                "Unauthorized",
                401,
                {"WWW-Authenticate": 'Basic realm="contacts"'},
                media_type="text/plain",
            )
        try:
            root = etree.fromstring(await request.body(), _PARSER)
            body = root.find(f"{{{SOAP_ENV}}}Body")
            operation = next(iter(body)) if body is not None and len(body) else None
        except etree.XMLSyntaxError:
            return soap_fault("Client", "InvalidArgument: the request is not well-formed XML")
        if operation is None or not isinstance(operation.tag, str):
            return soap_fault("Client", "InvalidArgument: no operation in the SOAP Body")
        name = etree.QName(operation)
        handler = self._operations().get(name.localname)
        if name.namespace != NAMESPACE or handler is None:
            return soap_fault("Client", f"UnknownOperation: {name.localname}")
        try:
            return handler(operation)
        except _BadRequest as exc:
            return soap_fault("Client", f"InvalidArgument: {exc}")

    def _operations(self) -> dict[str, Callable[[Any], Response]]:
        return {
            "GetContact": self._get_contact,
            "GetContactByEmail": self._get_by_email,
            "GetContacts": self._get_contacts,
            "ListChangedContacts": self._list_changed,
        }

    def _single(self, operation: str, person: Person | None) -> Response:
        if person is None:
            return soap_fault("Client", "ContactNotFound")
        envelope, body = _envelope()
        _append_contact(etree.SubElement(body, _q(f"{operation}Response")), "contact", person)
        return _xml(envelope)

    def _get_contact(self, operation: etree._Element) -> Response:
        return self._single("GetContact", self._person(_child_text(operation, "id") or ""))

    def _get_by_email(self, operation: etree._Element) -> Response:
        email = (_child_text(operation, "email") or "").lower()
        return self._single("GetContactByEmail", self._by_email.get(email))

    def _get_contacts(self, operation: etree._Element) -> Response:
        ids = [(node.text or "").strip() for node in operation.findall(_q("ids"))]
        if len(ids) > MAX_IDS:
            raise _BadRequest(f"at most {MAX_IDS} ids per call")
        envelope, body = _envelope()
        answer = etree.SubElement(body, _q("GetContactsResponse"))
        for contact_id in dict.fromkeys(ids):
            if (person := self._person(contact_id)) is not None:
                _append_contact(answer, "contacts", person)
        return _xml(envelope)

    def _list_changed(self, operation: etree._Element) -> Response:
        token = _child_text(operation, "pageToken", required=False)
        try:
            since = datetime.fromisoformat(_child_text(operation, "since") or "")
            size = int(_child_text(operation, "maxResults") or "")
        except ValueError as exc:
            raise _BadRequest("since must be an xsd:dateTime and maxResults an xsd:int") from exc
        if not 1 <= size <= MAX_RESULTS:
            raise _BadRequest(f"maxResults must be between 1 and {MAX_RESULTS}")
        since = since if since.tzinfo else since.replace(tzinfo=UTC)
        offset = 0
        if token:
            state = decode_cursor(token)
            if state is None or not isinstance(state.get("o"), int):
                raise _BadRequest("pageToken is not valid")
            # The token pins the query it continues, as a real page token does.
            since, offset = datetime.fromisoformat(state["since"]), state["o"]
        changed = self._changes[bisect_left(self._change_times, since) :]
        envelope, body = _envelope()
        answer = etree.SubElement(body, _q("ListChangedContactsResponse"))
        for person in changed[offset : offset + size]:
            _append_contact(answer, "contacts", person)
        if offset + size < len(changed):
            next_token = encode_cursor({"since": since.isoformat(), "o": offset + size})
            etree.SubElement(answer, _q("nextPageToken")).text = next_token
        etree.SubElement(answer, _q("total")).text = str(len(changed))
        return _xml(envelope)
