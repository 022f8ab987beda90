"""Build the examples: every ``wasm/examples/*.wat`` to ``wasm/build/*.wasm``.

The toolchain is wasmtime's own WAT assembler (PyPI), so the build runs
anywhere the project installs.  ``python -m wasm.build``.
"""
from __future__ import annotations

import sys
from pathlib import Path

import wasmtime

EXAMPLES = Path(__file__).parent / "examples"
BUILD = Path(__file__).parent / "build"


def build(out_dir: Path = BUILD) -> list[Path]:
    out_dir.mkdir(parents=True, exist_ok=True)
    built = []
    for source in sorted(EXAMPLES.glob("*.wat")):
        target = out_dir / (source.stem + ".wasm")
        target.write_bytes(bytes(wasmtime.wat2wasm(source.read_text())))
        built.append(target)
    return built


def example_wasm(name: str) -> bytes:
    """An example compiled in memory (tests and benchmarks)."""
    return bytes(wasmtime.wat2wasm((EXAMPLES / f"{name}.wat").read_text()))


if __name__ == "__main__":
    for path in build():
        print(f"{path} ({path.stat().st_size} bytes)")
    sys.exit(0)
