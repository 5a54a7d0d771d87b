"""Does a seeded request give the same text whatever it is batched with? One request (seed 1234,
temperature 1.0, 24 tokens) is sent 12 times beside 0 to 11 other requests of other lengths, on
the in-process engine in the dtype given; the script prints how many distinct texts came back.
Each dtype in a fresh process (the engine binds its OpenMP threads for the process's life).

    .venv/bin/python bench/bench_batch_invariance.py float32
    .venv/bin/python bench/bench_batch_invariance.py bfloat16
"""
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

if __name__ == "__main__":
    from generator.backends.vllm import VllmBackend
    from generator.records import Request

    dtype = sys.argv[1] if len(sys.argv) > 1 else "float32"
    backend = VllmBackend("embedded:smollm2-135m", dtype=dtype)
    probe = Request(id="probe", prompt="Describe a lighthouse in one sentence.", max_tokens=24,
                    temperature=1.0, seed=1234)
    texts = []
    for n in range(12):
        others = [Request(id=f"o{n}_{j}", prompt="Name a colour." + " Please." * j, max_tokens=8 + j,
                          seed=5 + j) for j in range(n)]
        batch = others[: n // 2] + [probe] + others[n // 2:]
        texts.append(backend.generate(batch)[n // 2].text)
    print(f"{dtype}: {len(set(texts))} distinct texts in {len(texts)} batches of 1 to 12 requests")
    for text in sorted(set(texts)):
        print(f"  {texts.count(text):2d} × {text!r}")
