from setuptools import find_packages, setup


def read_requirements(path='requirements.txt'):
    with open(path) as f:
        return [ln.strip() for ln in f if ln.strip() and not ln.startswith('#')]


setup(
    name='mg_llava',
    version='0.1.0',
    description='MG-LLaVA (multi-granularity LLaVA) as a clean extension of XTuner/MMEngine',
    packages=find_packages(include=['mg_llava', 'mg_llava.*']),
    python_requires='>=3.10',
    install_requires=read_requirements(),
    extras_require={
        'deepspeed': ['deepspeed==0.16.2'],
        'dev': ['pytest', 'pytest-timeout'],
    },
)
