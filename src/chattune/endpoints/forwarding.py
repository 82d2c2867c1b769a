"""How a gateway passes a request on: send it to an instance, relay the answer (a stream too), mirror a copy.

The client's key stays at the gateway: an instance gets the gateway's own token.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator

import httpx
from fastapi import Request, Response
from fastapi.responses import StreamingResponse

from chattune.endpoints.routing import DEPLOYMENT_HEADER, Refusal, Router
from chattune.endpoints.supervisor import Instance
from chattune.entities import Deployment
from chattune.errors import BadGatewayError
from chattune.serving import sse
from chattune.serving.errors import coded_response
from chattune.serving.protocol import SERVED_MODEL_HEADER

# Errors after which nothing reached the client and the instance is gone or restarting: retried elsewhere.
REFUSED = (httpx.ConnectError, httpx.RemoteProtocolError, httpx.ReadError)


class Forwarder:
    """Sends requests to instances with one pooled client, and shapes their answers for the gateway's client."""

    def __init__(self, token: str) -> None:
        self.token = token
        self.client = httpx.AsyncClient(
            timeout=None, limits=httpx.Limits(max_connections=None, max_keepalive_connections=64)
        )

    async def aclose(self) -> None:
        """Close the pooled connections."""
        await self.client.aclose()

    async def send(self, dep: Deployment, inst: Instance, request: Request, body: bytes) -> httpx.Response:
        """Forward the request to the instance; return once the instance starts answering.

        ``request_timeout_ms`` bounds that wait, which for a non-streamed answer is the whole generation (the instance
        sends nothing before it is done).

        Raises:
            TimeoutError: the instance did not answer within ``request_timeout_ms``.
            httpx.HTTPError: the instance could not be reached.
        """
        headers = {
            "content-type": request.headers.get("content-type", "application/json"),
            "authorization": f"Bearer {self.token}",  # the client's key stays here
        }
        if dep.share_base_with:  # served from another deployment's instances: its own model by default
            headers[SERVED_MODEL_HEADER] = f"{dep.model_name}:{dep.model_version}"
        upstream = self.client.build_request(
            request.method, f"{inst.url}{request.url.path}", content=body, headers=headers
        )
        timeout_s = dep.settings.request_timeout_ms / 1000
        return await asyncio.wait_for(self.client.send(upstream, stream=True), timeout_s)

    @staticmethod
    async def failed_in_serve(inst: Instance, upstream: httpx.Response) -> bool:
        """Whether Ray Serve's proxy, not the app, answered a 5xx (a replica died or was unavailable mid-request).

        The app answers every error as JSON in OpenAI's shape; Serve's proxy answers its own failures (a dead replica
        actor: 500, no replica available: 503) as plain text. Such an answer is closed here, unread by the client.
        """
        if not inst.prefix or upstream.status_code < 500 or sse.is_event_stream(upstream.headers.get("content-type")):
            return False
        if "json" in upstream.headers.get("content-type", ""):
            return False
        await upstream.aclose()
        return True

    async def answer(self, dep: Deployment, upstream: httpx.Response, lease: contextlib.AsyncExitStack) -> Response:
        """The instance's answer for the client.

        A stream is relayed as it comes and keeps ``lease`` until it ends; otherwise the answer is read whole and
        ``lease`` closed.
        """
        headers = {DEPLOYMENT_HEADER: dep.name}
        media_type = upstream.headers.get("content-type")
        if sse.is_event_stream(media_type):
            return StreamingResponse(
                _relay(upstream, lease), status_code=upstream.status_code, media_type=media_type, headers=headers
            )
        async with lease:
            try:
                content = await upstream.aread()
            except httpx.HTTPError as exc:
                return coded_response(
                    BadGatewayError, f"deployment {dep.name!r} failed mid-answer: {type(exc).__name__}"
                )
            finally:
                await upstream.aclose()
        return Response(content, status_code=upstream.status_code, media_type=media_type, headers=headers)

    async def mirror(self, router: Router, dep: Deployment, request: Request, body: bytes) -> str:
        """Send a copy of the request to the shadow deployment ``dep``.

        Its answer is read and discarded, its failures never reach the client. Returns the outcome /metrics counts: the
        status, "skipped" (no free instance: a copy never waits in line) or "error".
        """
        try:
            async with router.lease(dep, queue=False) as inst:
                response = await self.send(dep, inst, request, body)
                await response.aread()
                await response.aclose()
                return str(response.status_code)
        except Refusal:
            return "skipped"
        except (TimeoutError, httpx.HTTPError):
            return "error"


async def _relay(upstream: httpx.Response, lease: contextlib.AsyncExitStack) -> AsyncIterator[bytes]:
    async with lease:
        try:
            async for chunk in upstream.aiter_raw():
                yield chunk
        except httpx.HTTPError as exc:  # after the 200: an error event, as OpenAI sends it
            yield sse.event({"error": {"message": f"upstream failed: {type(exc).__name__}"}})
        finally:
            await upstream.aclose()
