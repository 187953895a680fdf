"""Starting a warehouse export or a retention run through the API (``admin`` only).

Each answers the run's summary (the manifest's, for an export) once it is done; a
second call while a run of the same kind is under way, on any instance, is answered
``CONFLICT`` at once. Who started it is in the audit log under the calling key.
"""

from __future__ import annotations

import strawberry
from strawberry.types import Info

from gateway.access.api_keys import Scope
from gateway.export.manifest import TableResult
from gateway.export.runs import Caller
from resolvers.graphql.access import require
from resolvers.graphql.context import Context

GatewayInfo = Info[Context, None]


@strawberry.type(description="One table of an export run, as its manifest records it.")
class ExportedTable:
    table: str
    upserts: int
    deletes: int = strawberry.field(
        description="Rows gone since the last run (erased, merged away, removed by retention)."
    )
    files: int
    cursor_from: str = strawberry.field(description="The window's start (ISO time).")
    cursor_to: str = strawberry.field(description="The window's end; the next run's start.")

    @classmethod
    def of(cls, result: TableResult) -> ExportedTable:
        data = result.as_json()
        return cls(
            table=result.table,
            upserts=data["upserts"],
            deletes=data["deletes"],
            files=len(result.files),
            cursor_from=result.cursor_from,
            cursor_to=result.cursor_to,
        )


@strawberry.type(description="A finished export run: its manifest's summary.")
class ExportRun:
    run_id: str = strawberry.field(description="Names `_manifests/<runId>.json` in the target.")
    resumed: bool = strawberry.field(description="It finished a run that had died half way.")
    pseudonymised: bool
    rows: int
    seconds: float
    tables: list[ExportedTable]


@strawberry.type(description="What a retention run removed (or, dry, would remove).")
class RetentionRun:
    dry_run: bool
    customers: int = strawberry.field(description="Customers erased (or that would be).")
    events: int = strawberry.field(description="Events deleted or anonymised.")
    events_action: str = strawberry.field(description="delete or anonymise.")
    tombstones: int
    impressions: int = strawberry.field(
        description="Served recommendation lists deleted (older than "
        "GATEWAY_RETENTION_IMPRESSIONS_DAYS)."
    )


def _caller(info: GatewayInfo) -> Caller:
    principal = require(info, Scope.ADMIN)
    return Caller(principal.name, principal.key_id)


@strawberry.type
class RunMutation:
    @strawberry.mutation(
        description="Export what changed since the last run into the configured target "
        "(GATEWAY_EXPORT_DIR) as Parquet, pseudonymised unless `raw`; answers the run's "
        "summary when it is done. CONFLICT while another export into it is under way.",
    )
    async def run_export(
        self, info: GatewayInfo, raw: bool = False, full: bool = False
    ) -> ExportRun:
        caller = _caller(info)
        report = await info.context.services.runs.export(
            caller, raw=raw, full=full, operation="mutation:runExport"
        )
        return ExportRun(
            run_id=report.run_id,
            resumed=report.resumed,
            pseudonymised=report.pseudonymised,
            rows=report.rows,
            seconds=report.seconds,
            tables=[ExportedTable.of(t) for t in report.tables],
        )

    @strawberry.mutation(
        description="Apply the retention rules (GATEWAY_RETENTION_*): a dry run that "
        "changes nothing unless `apply`. Erasures are audited under the calling key. "
        "CONFLICT while another retention run is under way.",
    )
    async def run_retention(self, info: GatewayInfo, apply: bool = False) -> RetentionRun:
        caller = _caller(info)
        report = await info.context.services.runs.retention(
            caller, apply=apply, operation="mutation:runRetention"
        )
        return RetentionRun(
            dry_run=report.dry_run,
            customers=report.customers,
            events=report.events,
            events_action=report.events_action.value,
            tombstones=report.tombstones,
            impressions=report.impressions,
        )
