"""Where a planned object's completion stopped (steps.py), graphql-core's path goes
on: the stopped field completed with the value (or error) in hand, the rest field by
field, as ``execute_fields`` and ``execute_field`` would have."""

from __future__ import annotations

from collections.abc import Awaitable
from typing import Any

from graphql import GraphQLObjectType, GraphQLOutputType
from graphql.execution.collect_fields import FieldDetailsList, GroupedFieldSet
from graphql.pyutils import AwaitableOrValue, Path, Undefined, gather_with_cancel
from strawberry.schema.schema import StrawberryGraphQLCoreExecutionContext

from resolvers.graphql.execution.steps import Partial


class Resumption(StrawberryGraphQLCoreExecutionContext):
    """graphql-core's execution context, able to finish an object a plan started."""

    def resume(
        self,
        parent_type: GraphQLObjectType,
        path: Path | None,
        fields: GroupedFieldSet,
        stopped: Partial,
        position_context: Any,
    ) -> AwaitableOrValue[dict[str, Any]]:
        """Complete an object from where its plan stopped, as graphql-core's
        ``execute_fields`` would have from there: the field that stopped it with the
        value (or error) its read answered, the rest field by field."""
        source, results = stopped.source, stopped.results
        awaitable_fields: list[str] = []
        try:
            for index, (response_name, field_details_list) in enumerate(fields.items()):
                if index < stopped.at:
                    continue
                field_path = Path(path, response_name, parent_type.name)
                if index == stopped.at:
                    result = self._complete_read(
                        parent_type, field_details_list, field_path, stopped, position_context
                    )
                else:
                    result = self.execute_field(
                        parent_type, source, field_details_list, field_path, position_context
                    )
                if result is not Undefined:
                    results[response_name] = result
                    if self.is_awaitable(result):
                        awaitable_fields.append(response_name)
        except Exception:
            if awaitable_fields:
                self.settle_in_background([results[name] for name in awaitable_fields])
            raise
        if not awaitable_fields:
            return results

        async def get_results() -> dict[str, Any]:
            awaited = await gather_with_cancel(*(results[name] for name in awaitable_fields))
            results.update(zip(awaitable_fields, awaited, strict=True))
            return results

        return get_results()

    def _complete_read(
        self,
        parent_type: GraphQLObjectType,
        field_details_list: FieldDetailsList,
        path: Path,
        stopped: Partial,
        position_context: Any,
    ) -> Any:
        """What graphql-core's ``execute_field`` does with a resolver's answer (here
        the planned read's, already in hand): complete it, or report its error."""
        field = parent_type.fields[field_details_list[0].node.name.value]
        return_type = field.type
        info = self.build_resolve_info(
            field, [d.node for d in field_details_list], parent_type, path
        )
        value = stopped.value
        try:
            if stopped.raised:
                raise value
            if self.is_awaitable(value):
                return self.complete_awaitable_value(
                    return_type, field_details_list, info, path, value, position_context
                )
            completed = self.complete_value(
                return_type, field_details_list, info, path, value, position_context
            )
            if self.is_awaitable(completed):
                return self._await_completed(completed, return_type, field_details_list, path)
        except Exception as raw_error:  # noqa: BLE001 - as graphql-core's execute_field
            self.handle_field_error(raw_error, return_type, field_details_list, path)
            return None
        return completed

    async def _await_completed(
        self,
        completed: Awaitable[Any],
        return_type: GraphQLOutputType,
        field_details_list: FieldDetailsList,
        path: Path,
    ) -> Any:
        try:
            return await completed
        except Exception as raw_error:  # noqa: BLE001 - as graphql-core's execute_field
            self.handle_field_error(raw_error, return_type, field_details_list, path)
            return None


__all__ = ["Resumption"]
