"""The meter a chat counts with, built from its settings: where it looks for a tokenizer, what it keeps.

``meter_for`` is what the command line calls before a session starts (``meter.attach`` then hands it
to the session):

- the bundled (or any ``--local-model``) llama.cpp server is always counted by its own tokenizer:
  it is llama-cpp-python's, nothing to probe; the template learned from it is kept per model file;
- another endpoint is probed once for a tokenizer (``servertokens.probe``), unless it is OpenAI's
  own or the model is an OpenAI one (tiktoken is exact there): the probe is skipped, not failed;
- with ``network`` False (``--dry-run``) nothing is asked of any server: the calibration kept for the
  endpoint and model (``calibration.json`` in the data folder) is all there is.
"""

from __future__ import annotations

from pathlib import Path

from stateless_chat.calibration import FILE_NAME, CalibrationStore, store_key
from stateless_chat.config import Settings
from stateless_chat.meter import Meter, TextTokenizer
from stateless_chat.sanitize import public_url
from stateless_chat.tokens import TokenCounter

LOCAL_ENDPOINT = "local"  # how the store names the local server, whose port changes with every start


def local_template_key(model_path: Path) -> str:
    """Return the key of a model file's chat template in the store: its name and size."""
    try:
        size = model_path.stat().st_size
    except OSError:
        size = 0
    return f"{model_path.name}:{size}"


def meter_for(settings: Settings, *, data_dir: Path | None, local_model: Path | None = None,
              network: bool = True, timeout: float | None = None) -> Meter:
    """Return the meter for ``settings``' model at its first endpoint (see the module docstring).

    ``local_model`` is the GGUF file when the endpoint is the local server started for it; ``data_dir``
    None keeps nothing; ``timeout`` bounds each request to the tokenizer (default: the shorter of
    the settings' timeout and ``servertokens.TIMEOUT``).
    """
    from stateless_chat import servertokens

    base = TokenCounter(settings.model, settings.encoding, settings.default_encoding)
    store = CalibrationStore.open(data_dir / FILE_NAME) if data_dir is not None else None
    url = settings.endpoints[0]
    wait = timeout if timeout is not None else min(settings.timeout, servertokens.TIMEOUT)
    if local_model is not None:
        def local() -> TextTokenizer | None:
            return servertokens.ServerTokenizer(url, "llama-cpp-python", settings.model, timeout=wait)

        return Meter(base, key=store_key(LOCAL_ENDPOINT, local_model.name), store=store,
                     find_tokenizer=local if network else None, template_key=local_template_key(local_model))
    key = store_key(public_url(url), settings.model)
    probing = network and not settings.uses_default_endpoint and not base.known

    def remote() -> TextTokenizer | None:
        return servertokens.probe(url, settings.model, settings.key_for(url) or None, timeout=wait)

    return Meter(base, key=key, store=store, find_tokenizer=remote if probing else None)


__all__ = ["LOCAL_ENDPOINT", "local_template_key", "meter_for"]
