"""The console's routes under /console, each with the scope it needs.

Reading a customer needs profiles:read, invalidating profiles:write, export and
erasure admin (as the API's fields do); the review queue is a writer's (profiles:write),
as ``identityReviews`` is. The check needs no more than a key (it reads no one); the
pages of a key lacking a scope show no button for it, and a POST of one is 403.
"""

from __future__ import annotations

from starlette.datastructures import URL
from starlette.requests import Request
from starlette.responses import PlainTextResponse, RedirectResponse, Response
from starlette.routing import BaseRoute, Match, Mount, Route, Router
from starlette.staticfiles import StaticFiles

from gateway.access.api_keys import Scope
from resolvers.console import customers, experiments, health, reviews, sign_in, studio
from resolvers.console.pages import secure
from resolvers.console.visit import page, redirect

READ, WRITE, ADMIN = Scope.PROFILES_READ, Scope.PROFILES_WRITE, Scope.ADMIN


async def home(request: Request) -> Response:
    return redirect("/console/customers")


async def not_found(request: Request) -> Response:
    """Under /console, even a path that names nothing answers with the console's
    headers: no page of the console may be framed. A path that names a page but for a
    trailing slash is redirected to it, as Starlette's router does (this route, which
    takes every path, would otherwise answer first)."""
    path = request.scope["path"]
    other = dict(request.scope, path=path.rstrip("/") if path.endswith("/") else path + "/")
    router: Router = request.scope["router"]
    for route in router.routes:
        if getattr(route, "endpoint", None) is not_found:
            continue
        if route.matches(other)[0] is not Match.NONE:
            return secure(RedirectResponse(str(URL(scope=other))))
    return secure(PlainTextResponse("Not Found", status_code=404))


def console_routes() -> list[BaseRoute]:
    return [
        Route("/console", home),
        Route("/console/", home),
        Route("/console/sign-in", sign_in.sign_in_page, methods=["GET"]),
        Route("/console/sign-in", sign_in.sign_in, methods=["POST"]),
        Route("/console/sign-out", page(sign_in.sign_out), methods=["POST"]),
        Route("/console/customers", page(customers.search, READ)),
        Route("/console/customers/{customer_id}", page(customers.customer, READ)),
        Route(
            "/console/customers/{customer_id}/invalidate",
            page(customers.invalidate, WRITE),
            methods=["POST"],
        ),
        Route(
            "/console/customers/{customer_id}/export",
            page(customers.export, ADMIN),
            methods=["POST"],
        ),
        Route(
            "/console/customers/{customer_id}/forget",
            page(customers.forget_page, ADMIN),
            methods=["GET"],
        ),
        Route(
            "/console/customers/{customer_id}/forget",
            page(customers.forget, ADMIN),
            methods=["POST"],
        ),
        # The queue shows both records of each pair: a reader's data as well.
        Route("/console/reviews", page(reviews.queue, READ, WRITE)),
        Route("/console/reviews/{review_id}", page(reviews.resolve, WRITE), methods=["POST"]),
        Route("/console/templates", page(studio.index, READ)),
        Route("/console/templates/studio", page(studio.studio, READ), methods=["GET"]),
        Route("/console/templates/check", page(studio.check_json), methods=["POST"]),
        Route("/console/templates/preview", page(studio.preview, READ), methods=["POST"]),
        Route("/console/templates/save", page(studio.save, WRITE), methods=["POST"]),
        Route("/console/templates/diff", page(studio.diff, READ)),
        Route("/console/experiments", page(experiments.experiments, READ)),
        Route("/console/health", page(health.health)),
        Mount(
            "/console/static",
            StaticFiles(packages=[("resolvers.console", "static")]),
            name="console-static",
        ),
        Route("/console/{rest:path}", not_found, methods=["GET", "HEAD", "POST"]),
    ]
