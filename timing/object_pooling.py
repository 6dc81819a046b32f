"""Object pooling: upstream reference (materialised 2880-ch map) vs `exact` vs `fast`, real channel sizes.

    python timing/object_pooling.py [--device cuda]
"""
import argparse

from mg_llava.models.object_pooling import benchmark

if __name__ == '__main__':
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument('--device', default='cpu')
    benchmark(device=ap.parse_args().device)
