"""A tiny OpenAI-compatible server on loopback: chat completions and embeddings, counted, optionally slow.

Used by tests/test_kga_runtime.py and tests/test_images.py in a thread, and as a
script for the real-app run (``python tests/fake_openai.py PORT``). Embeddings
are deterministic (a hash of the text), so equal texts get equal vectors.
"""

from __future__ import annotations

import base64
import hashlib
import json
import struct
import sys
import threading
import time
from collections import Counter
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

DIMENSIONS = 16


def vector(text: str) -> list[float]:
    digest = hashlib.sha256(text.encode()).digest()
    return [(b - 128) / 128 for b in digest[:DIMENSIONS]]


class FakeOpenAI:
    def __init__(self, port: int = 0) -> None:
        self.calls: Counter[str] = Counter()
        self.embedded: Counter[str] = Counter()
        self.chat_delay = 0.0
        self.lock = threading.Lock()
        fake = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = json.loads(self.rfile.read(int(self.headers.get("Content-Length") or 0)) or b"{}")
                if self.path.endswith("/embeddings"):
                    self._send(fake.embeddings(body))
                elif self.path.endswith("/chat/completions"):
                    self._send(fake.chat(body))
                else:
                    self.send_error(404)

            def do_GET(self) -> None:
                if self.path == "/stats":  # what the provider was asked, for runs outside pytest
                    self._send({"calls": dict(fake.calls), "embedded": dict(fake.embedded)})
                else:
                    self._send({"object": "list", "data": [{"id": "fake-model", "object": "model"}]})

            def _send(self, payload: dict[str, Any]) -> None:
                data = json.dumps(payload).encode()
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def log_message(self, format: str, *args: Any) -> None:
                return

        self.server = ThreadingHTTPServer(("127.0.0.1", port), Handler)
        self.server.daemon_threads = True
        self.port = int(self.server.server_address[1])
        self.base_url = f"http://127.0.0.1:{self.port}/v1"

    def embeddings(self, body: dict[str, Any]) -> dict[str, Any]:
        inputs = body.get("input", [])
        inputs = [inputs] if isinstance(inputs, str) else inputs
        with self.lock:
            self.calls["embeddings"] += 1
            for text in inputs:
                self.embedded[str(text)] += 1
        data = []
        for i, text in enumerate(inputs):
            vec = vector(str(text))
            if body.get("encoding_format") == "base64":
                emb: Any = base64.b64encode(struct.pack(f"<{len(vec)}f", *vec)).decode()
            else:
                emb = vec
            data.append({"object": "embedding", "index": i, "embedding": emb})
        return {
            "object": "list",
            "data": data,
            "model": body.get("model", ""),
            "usage": {"prompt_tokens": 1, "total_tokens": 1},
        }

    def chat(self, body: dict[str, Any]) -> dict[str, Any]:
        with self.lock:
            self.calls["chat"] += 1
        time.sleep(self.chat_delay)
        last = (body.get("messages") or [{}])[-1].get("content", "")
        text = f"fake answer ({len(str(last))} characters of prompt)"
        return {
            "id": f"chatcmpl-{self.calls['chat']}",
            "object": "chat.completion",
            "created": int(time.time()),
            "model": body.get("model", "fake-model"),
            "choices": [{"index": 0, "message": {"role": "assistant", "content": text}, "finish_reason": "stop"}],
            "usage": {"prompt_tokens": 1, "completion_tokens": 1, "total_tokens": 2},
        }

    def start(self) -> FakeOpenAI:
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        return self

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()


if __name__ == "__main__":
    fake = FakeOpenAI(int(sys.argv[1]) if len(sys.argv) > 1 else 0)
    if len(sys.argv) > 2:
        fake.chat_delay = float(sys.argv[2])
    print(f"fake OpenAI on {fake.base_url}", flush=True)
    fake.server.serve_forever()
