"""`python -m llama_cpp.server`, started after ptalign's AMX guard (llm/llamacpp.guard_amx).

Same arguments as llama_cpp.server: `python -m ptalign.llm.llamacpp_server --model M.gguf --port 8000`.
Use it for a loopback server on a CPU that reports AMX, where plain llama_cpp.server can die with
SIGILL in llama.cpp's AMX kernels; elsewhere it is llama_cpp.server unchanged.
"""

import runpy

from ptalign.llm.llamacpp import guard_amx

if __name__ == "__main__":
    guard_amx()
    runpy.run_module("llama_cpp.server", run_name="__main__", alter_sys=True)
