"""The local web page's server: photos, videos, the live camera and training a new style,
for people who never open a terminal.

Every request names a style by the id the page got from /api/models (a model file in the
models folder): no path the page sends reaches the file system. Uploads are limited in size
and land in the server's own temporary folder, which it deletes when it stops.
"""
from __future__ import annotations

import asyncio
import contextlib
import io
import json
import shutil
import tempfile
import threading
import uuid
from concurrent.futures import ThreadPoolExecutor
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from fastapi import FastAPI, File, Form, HTTPException, Request, UploadFile, WebSocket, WebSocketDisconnect
from fastapi.responses import FileResponse, JSONResponse, Response
from fastapi.staticfiles import StaticFiles

import config
from common.devices import resolve_device
from common.errors import UserError
from common.images import IMAGE_READ_ERRORS, decode_image, save_image
from common.model_files import model_stem
from stylization.content_source.base import scale_within
from stylization.paths import MODEL_EXTENSIONS
from stylization.processor import compiles_here
from stylization.sink import contact_sheet
from stylization.stylizer import StyleOptions, Stylizer
from webapp.jobs import JobBoard
from webapp.live import LiveCamera, asks_speed_up, live_note
from webapp.training import TrainingBoard

STATIC = Path(__file__).with_name("static")


@dataclass
class Place:
    """Where the server keeps things: the models it offers, its temporary folder, the sample
    photo its thumbnails show, and the training set-up (VGG file, photos, the starting model)."""
    models_dir: Path
    work_dir: Path
    sample_photo: Path
    vgg_path: Path | None = None
    photos_dir: Path | None = None


def list_models(models_dir: Path) -> dict[str, Path]:
    """id -> model file, for every model file in models_dir (not its subfolders)."""
    files = sorted(p for p in models_dir.iterdir()
                   if p.is_file() and p.name.lower().endswith(MODEL_EXTENSIONS) and not p.name.endswith(".onnx"))
    return {model_stem(p): p for p in files}


def live_threads(count: int) -> ThreadPoolExecutor:
    """The threads live frames run on, each running PyTorch on one CPU thread (frames on
    threads asyncio.to_thread picks would each bring a full set of PyTorch's threads, waiting on
    one another). torch.set_num_threads also sets the count threads started later begin with,
    so the count the photos and videos run with is put back once these have started."""
    before = torch.get_num_threads()
    started = threading.Barrier(count + 1)
    pool = ThreadPoolExecutor(max_workers=count, thread_name_prefix="live", initializer=_one_cpu_thread)
    for _ in range(count):
        pool.submit(started.wait)
    started.wait()
    torch.set_num_threads(before)
    return pool


def _one_cpu_thread() -> None:
    # A thread takes the shared count at its first PyTorch call, after which its own count is
    # kept: that first call comes first here, so that putting the shared count back later does
    # not reach this thread.
    torch.get_num_threads()
    torch.set_num_threads(1)


class Server:
    """What the routes share: the place, the video and training jobs, the files made for
    download (by token), the thumbnails made so far."""

    def __init__(self, place: Place):
        self.place = place
        self.videos = JobBoard(place.work_dir / "videos")
        self.trainer = TrainingBoard(place.work_dir / "training", place.models_dir, place.vgg_path,
                                     place.photos_dir)
        self.results: dict[str, Path] = {}
        self.thumbs: dict[str, bytes] = {}
        self.thumb_lock = threading.Lock()
        self.live_threads = live_threads(config.WEB_LIVE_FRAMES_AT_ONCE)

    def model_file(self, style: str) -> Path:
        """The model of a style id the page got from /api/models; nothing else is opened."""
        models = list_models(self.place.models_dir)
        if style not in models:
            raise HTTPException(404, f"no style named {style!r}: pick one of the styles shown")
        return models[style]

    def keep(self, path: Path) -> str:
        """A download address for a file the server made."""
        token = uuid.uuid4().hex
        self.results[token] = path
        return f"/api/result/{token}"

    def thumbnail(self, style: str) -> bytes:
        with self.thumb_lock:
            if style not in self.thumbs:
                options = StyleOptions(max_size=config.WEB_LIMITS["thumbnail_px"])
                picture = Stylizer(self.model_file(style), options, device="cpu").image(
                    decode_image(self.place.sample_photo))
                buffer = io.BytesIO()
                picture.save(buffer, "JPEG", quality=85)
                self.thumbs[style] = buffer.getvalue()
            return self.thumbs[style]

    def close(self) -> None:
        self.videos.cancel_all()
        self.trainer.stop_all()
        shutil.rmtree(self.place.work_dir, ignore_errors=True)


def create_app(place: Place) -> FastAPI:
    server = Server(place)

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        yield
        server.close()

    app = FastAPI(title="Video Style Transfer", lifespan=lifespan, docs_url=None, redoc_url=None)
    app.mount("/static", StaticFiles(directory=STATIC), name="static")

    @app.exception_handler(UserError)
    async def user_error(request: Request, err: UserError) -> JSONResponse:
        return JSONResponse({"error": str(err)}, status_code=400)

    @app.get("/")
    async def index() -> FileResponse:
        return FileResponse(STATIC / "index.html")

    @app.get("/favicon.ico")
    async def favicon() -> Response:
        return Response(status_code=204)

    @app.get("/api/models")
    async def models() -> dict:
        names = list(list_models(place.models_dir))
        return {"models": [{"id": name, "thumbnail": f"/api/thumbnail/{name}"} for name in names],
                "training": server.trainer.ready(), "live_note": live_note(names),
                "live_in_flight": config.WEB_LIVE_FRAMES_AT_ONCE + 1,
                "live_speed_up": compiles_here(resolve_device("auto"))}

    @app.get("/api/thumbnail/{style}")
    async def thumbnail(style: str) -> Response:
        return Response(await asyncio.to_thread(server.thumbnail, style), media_type="image/jpeg")

    @app.get("/api/result/{token}")
    async def result(token: str) -> FileResponse:
        if token not in server.results or not server.results[token].exists():
            raise HTTPException(404, "this result is gone: make it again")
        path = server.results[token]
        return FileResponse(path, filename=path.name.split("_", 1)[1])

    add_photo_routes(app, server)
    add_video_routes(app, server)
    add_live_route(app, server)
    add_training_routes(app, server)
    return app


def add_photo_routes(app: FastAPI, server: Server) -> None:
    @app.post("/api/photo")
    async def photo(file: UploadFile = File(...), styles: str = Form(...), strength: float = Form(1.0),
                    preserve_color: bool = Form(False), max_size: int = Form(0)) -> dict:
        names = [s for s in styles.split(",") if s]
        if not names:
            raise HTTPException(400, "pick at least one style")
        paths = [server.model_file(name) for name in names]
        check_options(strength, 0.0, max_size)
        upload = await save_upload(file, server.place.work_dir, config.WEB_LIMITS["photo_mb"])
        options = StyleOptions(strength=strength, preserve_color=preserve_color, max_size=max_size or None)
        try:
            return await asyncio.to_thread(stylise_photo, server, upload, file.filename, list(zip(names, paths)),
                                           options)
        finally:
            upload.unlink(missing_ok=True)


def stylise_photo(server: Server, upload: Path, filename: str | None, styles: list[tuple[str, Path]],
                  options: StyleOptions) -> dict:
    """Each style's picture, and a contact sheet when there are several."""
    try:
        frame = np.asarray(decode_image(upload))
    except IMAGE_READ_ERRORS:
        raise UserError(f"{filename} is not an image this page can read: "
                        "give a JPEG, PNG or other picture") from None
    outputs = [(name, np.asarray(Stylizer(path, options).image(frame))) for name, path in styles]
    work = server.place.work_dir
    made = [{"style": name, "url": server.keep(save_image(out, work / f"{uuid.uuid4().hex}_{name}.png")),
             "width": out.shape[1], "height": out.shape[0]} for name, out in outputs]
    sheet = None
    if len(outputs) > 1:
        cells = [("input", scale_within(frame, options.max_size))] + outputs
        sheet = server.keep(save_image(contact_sheet(cells), work / f"{uuid.uuid4().hex}_sheet.jpg"))
    return {"results": made, "sheet": sheet}


def add_video_routes(app: FastAPI, server: Server) -> None:
    videos = server.videos

    @app.post("/api/video")
    async def video(file: UploadFile = File(...), style: str = Form(...), strength: float = Form(1.0),
                    preserve_color: bool = Form(False), smooth: float = Form(0.0),
                    max_size: int = Form(0)) -> dict:
        path = server.model_file(style)
        check_options(strength, smooth, max_size)
        upload = await save_upload(file, server.place.work_dir, config.WEB_LIMITS["video_mb"])
        options = StyleOptions(strength=strength, preserve_color=preserve_color, smooth=smooth,
                               max_size=max_size or None)
        return {"job": videos.start(path, upload, Path(file.filename or "clip").stem, options)}

    @app.get("/api/video/{job}")
    async def video_status(job: str) -> dict:
        return videos.status(job)

    @app.post("/api/video/{job}/cancel")
    async def video_cancel(job: str) -> dict:
        videos.cancel(job)
        return videos.status(job)

    @app.get("/api/video/{job}/result")
    async def video_result(job: str) -> FileResponse:
        path, name = videos.result(job)
        return FileResponse(path, media_type="video/mp4", filename=name)


def add_live_route(app: FastAPI, server: Server) -> None:
    @app.websocket("/api/live")
    async def live(socket: WebSocket) -> None:
        """The camera in the page (webapp/live.py): JSON messages set the style and the look,
        each binary message is a JPEG frame and is answered with the stylised frame as JPEG,
        and with what changed of the camera's state (LiveCamera.report). Frames go through the
        network side by side on the live threads and are answered in the order they came;
        {"speed_up": true} compiles the style meanwhile (in a process of its own)."""
        await socket.accept()
        camera = LiveCamera(server.model_file)
        building: asyncio.Future | None = None
        in_network: asyncio.Queue[asyncio.Future] = asyncio.Queue()
        answering = asyncio.create_task(answer_frames(socket, camera, in_network))
        loop = asyncio.get_running_loop()
        try:
            while True:
                message = await socket.receive()
                if message.get("type") == "websocket.disconnect":
                    return
                if message.get("text") and asks_speed_up(message["text"]):
                    if building is None or building.done():
                        building = asyncio.ensure_future(asyncio.to_thread(camera.speed_up))
                elif message.get("text"):
                    camera.update(message["text"])
                elif message.get("bytes") is not None:
                    in_network.put_nowait(loop.run_in_executor(server.live_threads, camera.stylise,
                                                               message["bytes"]))
        except (WebSocketDisconnect, RuntimeError):
            return
        finally:
            answering.cancel()


async def answer_frames(socket: WebSocket, camera: LiveCamera, in_network: asyncio.Queue) -> None:
    """Answers each frame once it is out of the network, in the order the frames came; a frame
    the server cannot read ends the connection with its message. After a frame, each part of
    the camera's state that changed goes as a message of its own."""
    told = camera.report()
    try:
        while True:
            frame, stylised = await (await in_network.get())
            await socket.send_bytes(await asyncio.to_thread(camera.finish, frame, stylised))
            now = camera.report()
            for key in now:
                if now[key] != told[key]:
                    await socket.send_text(json.dumps({key: now[key]}))
            told = now
    except HTTPException as err:
        await socket.send_text(json.dumps({"error": err.detail}))
        await socket.close()
    except (WebSocketDisconnect, RuntimeError):  # gone, or a frame failed: the page stops
        with contextlib.suppress(WebSocketDisconnect, RuntimeError):
            await socket.close()
    except Exception as err:  # noqa: BLE001 - anything else: said, instead of frames that never come
        with contextlib.suppress(WebSocketDisconnect, RuntimeError):
            await socket.send_text(json.dumps({"error": f"the camera stopped ({type(err).__name__}: "
                                                        f"{str(err)[:200]}): start it again"}))
            await socket.close()


def add_training_routes(app: FastAPI, server: Server) -> None:
    trainer, limit = server.trainer, config.WEB_LIMITS["photo_mb"]

    @app.post("/api/train")
    async def train(painting: UploadFile = File(...), name: str = Form(...), minutes: float = Form(20),
                    photos: list[UploadFile] = File(default=[])) -> dict:
        style_file = await save_upload(painting, server.place.work_dir, limit)
        saved = [await save_upload(p, server.place.work_dir / "photos_upload", limit) for p in photos]
        return {"job": trainer.start(name, style_file, saved, minutes)}

    @app.get("/api/train/{job}")
    async def train_status(job: str) -> dict:
        return trainer.status(job)

    @app.post("/api/train/{job}/stop")
    async def train_stop(job: str) -> dict:
        trainer.stop(job)
        return trainer.status(job)

    @app.post("/api/train/{job}/resume")
    async def train_resume(job: str) -> dict:
        trainer.resume(job)
        return trainer.status(job)

    @app.get("/api/train/{job}/{picture}")
    async def train_picture(job: str, picture: str) -> FileResponse:
        return FileResponse(trainer.picture(job, picture), headers={"Cache-Control": "no-store"})


def check_options(strength: float, smooth: float, max_size: int) -> None:
    if not 0 <= strength <= 1:
        raise HTTPException(400, "strength must be between 0 and 1")
    if not 0 <= smooth < 1:
        raise HTTPException(400, "smoothing must be at least 0 and below 1")
    if max_size and max_size < 16:
        raise HTTPException(400, "the output size must be at least 16 pixels")


async def save_upload(file: UploadFile, folder: Path, limit_mb: float) -> Path:
    """The upload in folder under a name of the server's own, refused past limit_mb."""
    folder.mkdir(parents=True, exist_ok=True)
    suffix = Path(file.filename or "").suffix.lower()[:8]
    path = folder / f"{uuid.uuid4().hex}{suffix if suffix.isascii() and suffix[1:].isalnum() else ''}"
    written = 0
    with open(path, "wb") as out:
        while chunk := await file.read(1 << 20):
            written += len(chunk)
            if written > limit_mb * 1e6:
                out.close()
                path.unlink(missing_ok=True)
                raise HTTPException(413, f"{file.filename} is larger than this page takes "
                                         f"({limit_mb:g} MB): make it smaller first")
            out.write(chunk)
    if written == 0:
        path.unlink(missing_ok=True)
        raise HTTPException(400, f"{file.filename or 'the upload'} is empty")
    return path


def temporary_work_dir() -> Path:
    return Path(tempfile.mkdtemp(prefix="style-transfer-web-"))
