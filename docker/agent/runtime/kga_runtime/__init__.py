"""Runtime layer of the Knowledge Graph Agent image: ``python -m kga_runtime`` loads the app and serves it.

What the app lacks for a production deployment lives here (docs/agent-runtime.md):
JSON logs with the request ID and scrubbed credentials, Prometheus metrics,
liveness/readiness on a side thread, Chroma over HTTP, a Redis cache for LLM
calls and embeddings, and the repository-URL fix. Each adapter names the app
symbol it patches; ``python -m kga_runtime --check`` imports them all.
"""

__all__ = ["__version__"]
__version__ = "0.1.0"
