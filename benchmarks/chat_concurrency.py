"""`mtu chat` under load: 20 requests at once from 5 conversations, through the app's real web API and queue.

    OMP_NUM_THREADS=1 python benchmarks/chat_concurrency.py [--conversations 5] [--per-conversation 4] [--steps 20]

The app (`mtu.chat.app.serve`, the shipped toy-world model, CPU) runs in this process on a free local port; each
conversation is its own `gradio_client.Client` (its own session, so its own image store). Each first uploads a scene
of its own (a different background, shape and place), then all send their requests at once from threads: half
"upscale this" (sr), half "remove the <shape>" (inpaint), acting on the conversation's last image. Checked: every
request is answered (none lost) with an image, and that image is nearest (mean absolute pixel difference) to its own
conversation's upload among all the uploads. Reported per request: the seconds from sending to the answer (client
side), the seconds it waited for the model and the seconds it sampled (as the reply states them).
"""

from __future__ import annotations

import argparse
import re
import socket
import statistics
import tempfile
import threading
import time
from pathlib import Path

import numpy as np
from PIL import Image

SCENES = [("white", "circle", "red", "top left"), ("black", "square", "green", "center"),
          ("gray", "triangle", "yellow", "bottom right"), ("white", "square", "blue", "top right"),
          ("black", "circle", "purple", "bottom left")]


def scene_image(index: int) -> Image.Image:
    from mtu.toyworld.scene import Scene, Shape, render

    background, kind, colour, where = SCENES[index % len(SCENES)]
    return render(Scene(background, (Shape(kind, colour, "large", where),)), 32)


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def parts(message: dict) -> list:
    """A message's content parts: {"text": ...} or {"file": path} (gradio 6's form) or a plain string."""
    content = message.get("content")
    return content if isinstance(content, list) else [content]


def last_image(history: list) -> Image.Image | None:
    for message in reversed(history):
        for part in parts(message):
            path = part.get("file") or part.get("path") if isinstance(part, dict) else None
            if message.get("role") == "assistant" and path:
                return Image.open(path).convert("RGB").resize((32, 32), Image.NEAREST)
    return None


def reply_text(history: list) -> str:
    texts = [part if isinstance(part, str) else part.get("text") or "" for message in history
             if message.get("role") == "assistant" for part in parts(message)]
    return next((text for text in reversed(texts) if text), "")


def ask(client, text: str, steps: int, upload: str | None = None):
    from gradio_client import handle_file

    message = {"text": text, "files": [handle_file(upload)] if upload else []}
    _, history = client.predict(message, [], "auto", steps, None, None, 0, None, api_name="/chat")
    return history


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--conversations", type=int, default=5)
    parser.add_argument("--per-conversation", type=int, default=4)
    parser.add_argument("--steps", type=int, default=20)
    args = parser.parse_args()
    from gradio_client import Client

    from mtu.chat.app import CONCURRENCY, serve

    port = free_port()
    app = serve("toyworld", port=port, device="cpu", block=False)
    url = f"http://127.0.0.1:{port}/"
    folder = Path(tempfile.mkdtemp(prefix="chat-bench-"))
    clients, uploads = [], []
    for index in range(args.conversations):
        path = folder / f"scene{index}.png"
        scene_image(index).save(path)
        client = Client(url, verbose=False)
        ask(client, "", args.steps, str(path))
        clients.append(client)
        uploads.append(np.asarray(scene_image(index), dtype=float))
    results, threads = [], []
    barrier = threading.Barrier(args.conversations * args.per_conversation)

    def one(conversation: int, number: int):
        kind = SCENES[conversation % len(SCENES)][1]
        text = "upscale this" if number % 2 == 0 else f"remove the {kind}"
        barrier.wait()
        sent = time.perf_counter()
        try:
            history = ask(clients[conversation], text, args.steps)
        except Exception as error:  # a lost request is what this measures
            results.append({"conversation": conversation, "text": text, "error": repr(error)})
            return
        total = time.perf_counter() - sent
        said = reply_text(history)
        times = re.search(r"waited ([0-9.]+) s, sampled in ([0-9.]+) s", said)
        image = last_image(history)
        nearest = None
        if image is not None:
            output = np.asarray(image, dtype=float)
            nearest = int(np.argmin([np.abs(output - upload).mean() for upload in uploads]))
        results.append({"conversation": conversation, "text": text, "total": total, "task": said.split("**")[1]
                        if "**" in said else None, "waited": float(times[1]) if times else None,
                        "sampled": float(times[2]) if times else None, "nearest": nearest})

    started = time.perf_counter()
    for conversation in range(args.conversations):
        for number in range(args.per_conversation):
            threads.append(threading.Thread(target=one, args=(conversation, number)))
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    wall = time.perf_counter() - started
    app.close()
    answered = [r for r in results if "error" not in r and r["nearest"] is not None]
    own = [r for r in answered if r["nearest"] == r["conversation"]]
    print(f"{len(threads)} requests from {args.conversations} conversations, {args.steps} steps, queue concurrency "
          f"{CONCURRENCY}: answered with an image {len(answered)}/{len(threads)}, with their own conversation's image "
          f"{len(own)}/{len(answered)}; wall {wall:.1f} s")
    print("| conversation | request | task | seconds to answer | waited for the model | sampled | nearest upload |")
    print("|---:|---|---|---:|---:|---:|---:|")
    for r in sorted(results, key=lambda r: (r["conversation"], r.get("total", 0))):
        if "error" in r:
            print(f"| {r['conversation']} | {r['text']} | LOST: {r['error']} | | | | |")
        else:
            print(f"| {r['conversation']} | {r['text']} | {r['task']} | {r['total']:.1f} | {r['waited']:.1f} | "
                  f"{r['sampled']:.1f} | {r['nearest']} |")
    totals = [r["total"] for r in answered]
    waits = [r["waited"] for r in answered if r["waited"] is not None]
    print(f"seconds to answer: median {statistics.median(totals):.1f}, max {max(totals):.1f}; waited for the model: "
          f"median {statistics.median(waits):.1f}, max {max(waits):.1f}")


if __name__ == "__main__":
    main()
