from setuptools import find_packages, setup


def read_requirements(path='requirements.txt'):
    with open(path) as f:
        return [ln.strip() for ln in f if ln.strip() and not ln.startswith('#')]


# The distribution name differs from the import name on purpose: mmengine resolves `read_base()` imports such as
# `from mg_llava.configs.mg_llava.vicuna7b_sft import *` with pkg_resources, which for a distribution named
# `mg_llava` looks in site-packages/ (wrong for an editable install); for a name it cannot find it falls back to
# the import system, which finds the package wherever it lives.
setup(
    name='xtuner-mg-llava',
    version='0.1.0',
    description='MG-LLaVA (multi-granularity LLaVA) as a clean extension of XTuner/MMEngine',
    packages=find_packages(include=['mg_llava', 'mg_llava.*']),
    # mg_llava/configs -> ../configs: the shipped configs travel with the package (as xtuner's do)
    package_data={'mg_llava': ['configs/*/*.py', 'configs/*/*.json', 'datagen/templates/*.json']},
    python_requires='>=3.10',
    install_requires=read_requirements(),
    extras_require={
        'deepspeed': ['deepspeed==0.16.2'],
        'tensorboard': ['tensorboard'],
        'dev': ['pytest', 'pytest-timeout', 'tensorboard'],
    },
)
