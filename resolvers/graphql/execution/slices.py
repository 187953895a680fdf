"""One list's completion, item by item as graphql-core does it, in slices of time."""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from graphql import GraphQLOutputType, GraphQLResolveInfo
from graphql.pyutils import AwaitableOrValue, Path, gather_with_cancel

from resolvers.graphql.execution.steps import odd, planned

if TYPE_CHECKING:
    from resolvers.graphql.execution.context import AcyclicExecutionContext


class ListSlices:
    """One list's completion, item by item as graphql-core does it, in slices of time."""

    def __init__(
        self,
        executor: AcyclicExecutionContext,
        item_type: GraphQLOutputType,
        field_details_list: Any,
        info: GraphQLResolveInfo[Any],
        path: Path,
        items: Sequence[Any],
    ) -> None:
        self.executor = executor
        self.item_type, self.field_details_list, self.info = item_type, field_details_list, info
        self.path, self.items = path, items
        self.index = 0
        self.completed: list[Any] = []
        self.awaitable: list[int] = []  # indices of completed items still to be awaited
        self.plan = executor.item_plan(item_type, field_details_list)

    def run(self, position_context: Any) -> None:
        """Complete items until the list ends or the operation's slice is used up."""
        executor, items, completed = self.executor, self.items, self.completed
        try:
            while self.index < len(items):
                index, item = self.index, items[self.index]
                # Not an awaitable item nor an exception: graphql-core awaits the one
                # and reports the other; a plan would call the item's methods on it.
                if self.plan is not None and item is not None and not odd(item):
                    results = planned(self.plan, item)
                    if type(results) is dict:
                        completed.append(results)
                        self.index += 1
                        if time.perf_counter() > executor.slice_ends:
                            return
                        continue
                    if not executor.is_awaitable(item):
                        # graphql-core's path completes the item from where the plan
                        # stopped (its execute_fields takes this up), reporting it.
                        executor.partial = (results, self.plan)  # type: ignore[assignment]
                item_path = self.path.add_key(index, None)
                if executor.is_awaitable(item):
                    completed.append(
                        executor.complete_awaitable_list_item_value(
                            item,
                            self.item_type,
                            self.field_details_list,
                            self.info,
                            item_path,
                            position_context,
                        )
                    )
                    self.awaitable.append(index)
                elif executor.complete_list_item_value(
                    item,
                    completed,
                    self.item_type,
                    self.field_details_list,
                    self.info,
                    item_path,
                    position_context,
                ):
                    self.awaitable.append(index)
                executor.partial = None  # taken up by now; never left for another object
                self.index += 1
                if time.perf_counter() > executor.slice_ends:
                    return
        except Exception:
            executor.partial = None
            # As graphql-core does: what was started is settled, not orphaned.
            pending = [completed[i] for i in self.awaitable]
            if pending:
                executor.settle_in_background(pending)
            raise

    def finished(self) -> AwaitableOrValue[list[Any]]:
        if not self.awaitable:
            return self.completed
        return self._gathered()

    async def rest(self, position_context: Any) -> list[Any]:
        while self.index < len(self.items):
            done = await self.executor.next_slice()
            try:
                self.run(position_context)
            finally:
                done.set_result(None)
        return await self._gathered() if self.awaitable else self.completed

    async def _gathered(self) -> list[Any]:
        completed = self.completed
        values = await gather_with_cancel(*(completed[i] for i in self.awaitable))
        for index, value in zip(self.awaitable, values, strict=True):
            completed[index] = value
        return completed


__all__ = ["ListSlices"]
