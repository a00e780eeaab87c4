"""Image endpoints: import (``fromSrc``), list, inspect, tag, remove, prune."""

from __future__ import annotations

import json

from dockyard.api.app import Router
from dockyard.api.messages import Request, Response
from dockyard.api.params import body_chunks, confined_owner, json_response, query_bool
from dockyard.engine.filters import parse_filters
from dockyard.engine.images import ImageService
from dockyard.errors import InvalidParameter, Unsupported

_CHUNK = 1 << 20


def register(router: Router, images: ImageService) -> None:
    """Add the image routes."""

    def image_list(req: Request) -> Response:
        rows = images.list_images(
            parse_filters(req.arg("filters")),
            query_bool(req, "all"),
            query_bool(req, "digests"),
            confined_owner(req),
        )
        return json_response(rows)

    async def image_create(req: Request) -> Response | None:
        source = req.arg("fromSrc")
        if source is None:
            name = req.arg("fromImage") or ""
            raise Unsupported(
                f"cannot pull {name}: this dockyard has no registry client yet; "
                "import or load the image instead"
            )
        if source != "-":
            raise InvalidParameter(
                "importing from a URL is not supported: send the archive as the request body"
            )
        assert req.body_stream is not None
        image_id = await images.import_image(
            body_chunks(req, _CHUNK),
            repo=req.arg("repo") or None,
            tag=req.arg("tag") or None,
            changes=req.query.get("changes", []),
            message=req.arg("message"),
            platform=req.arg("platform") or None,
            owner=confined_owner(req),
        )
        out = await req.start_stream(200, "application/json")
        await out.write(json.dumps({"status": image_id}).encode() + b"\r\n")
        await out.end()
        return None

    def image_inspect(req: Request) -> Response:
        return json_response(images.inspect(req.params["name"], confined_owner(req)))

    def image_tag(req: Request) -> Response:
        repo = req.arg("repo")
        if not repo:
            raise InvalidParameter("repository name must have at least one component")
        images.tag(req.params["name"], repo, req.arg("tag") or None, confined_owner(req))
        return Response(201, b"", None)

    async def image_delete(req: Request) -> Response:
        force, noprune = query_bool(req, "force"), query_bool(req, "noprune")
        result = await images.remove(req.params["name"], force, noprune, confined_owner(req))
        return json_response(result)

    async def image_prune(req: Request) -> Response:
        return json_response(await images.prune(parse_filters(req.arg("filters")), confined_owner(req)))

    r = router.add
    r("GET", "/images/json", "ImageList", image_list)
    r("POST", "/images/create", "ImageCreate", image_create, stream_body=True)
    r("POST", "/images/prune", "ImagePrune", image_prune)
    r("GET", "/images/{name:path}/json", "ImageInspect", image_inspect)
    r("POST", "/images/{name:path}/tag", "ImageTag", image_tag)
    r("DELETE", "/images/{name:path}", "ImageDelete", image_delete)
