"""Run ``llama_cpp.server`` as ``python -m`` would, with three changes (run by path, never imported).

- The server ends when the chat does, however the chat ends. Its stdin is a pipe that the chat holds
  and never writes to: end-of-file there means the chat has exited, even by SIGKILL or by the SIGHUP
  of a closed terminal, which run no cleanup. It then removes its log file (named by
  STATELESS_CHAT_SERVER_LOG; nobody is left to read it) and kills its own process group (which
  start_new_session made it the leader of).
- The user's environment does not steer it: llama_cpp.server reads HOST, PORT and CONFIG_FILE, and
  every one of its settings (API_KEY, SSL_CERTFILE, ...; any case), from the environment, where they
  may have been set for another program; PORT would make it listen where the chat never looks.
- llama.cpp's "extra buffer types" are off. Those hold weights repacked for AMX and similar kernels;
  on virtual machines whose CPU reports AMX that the hypervisor does not really provide, the first
  decode dies with SIGSEGV in ggml_backend_amx_mul_mat (seen with llama-cpp-python 0.3.36 built from
  source). For a small model they gain nothing. If a future llama-cpp-python renames the hook, the
  server runs unchanged.

The arguments are llama_cpp.server's own (``--model``, ``--port`` ...).
"""

from __future__ import annotations

import os
import runpy
import signal
import threading
from typing import Any

_log = os.environ.pop("STATELESS_CHAT_SERVER_LOG", "")


def _end_with_the_chat() -> None:
    try:
        while os.read(0, 4096):
            pass
    finally:
        if _log:
            try:
                os.unlink(_log)
            except OSError:
                pass
        if hasattr(os, "killpg") and os.getpgrp() == os.getpid():
            os.killpg(0, signal.SIGKILL)
        os._exit(1)


def _forget_the_environment() -> None:
    names = {"config_file", "host", "port", "api_key"}
    try:
        from llama_cpp.server.settings import Settings

        names.update(Settings.model_fields)
    except Exception:  # an older or newer server: the names above are the ones that matter most
        pass
    for name in [n for n in os.environ if n.lower() in names]:
        del os.environ[name]


def _no_extra_buffer_types() -> None:
    try:
        import llama_cpp.llama_cpp as native
    except ImportError:
        return
    defaults = getattr(native, "llama_model_default_params", None)
    if defaults is None:
        return

    def without_extra_buffers() -> Any:
        params = defaults()
        if hasattr(params, "use_extra_bufts"):
            params.use_extra_bufts = False
        return params

    native.llama_model_default_params = without_extra_buffers


if __name__ == "__main__":
    threading.Thread(target=_end_with_the_chat, daemon=True).start()
    _forget_the_environment()
    _no_extra_buffer_types()
    runpy.run_module("llama_cpp.server", run_name="__main__", alter_sys=True)
