"""Liquid templates: rendering (sandboxed, in worker processes, with budgets), the render context,
and stored named templates."""
