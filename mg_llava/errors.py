"""The one error family of mg_llava: bad input becomes an `InputError` naming the file and the sample.

    MGLLaVAError                       anything the project raises on purpose
      InputError(path, where, reason)  a file's content is wrong: "<path> [<where>]: <reason>"
        DataError                      training / evaluation data (json, jsonl, tsv, box files)
        ScoreError                     predictions / annotations given to the scorer
        ImageError(path, reason)       an image that is missing or cannot be decoded
      BoxError                         detector boxes that are malformed
      ResumeError                      a half-finished output that cannot be continued safely

All are ValueErrors (RuntimeError for ResumeError) so callers that caught the old classes still do.
torch-free: imported by the offline scorer.
"""


class MGLLaVAError(Exception):
    """Base of every error mg_llava raises on purpose."""


class InputError(MGLLaVAError, ValueError):
    """`path` (the file), `where` (line / row / id, may be empty), `reason`; `kind` is a short category used
    when skipped samples are counted (defaults to the reason)."""

    def __init__(self, path, where, reason, kind=None):
        self.path, self.where, self.reason = str(path), where, reason
        self.kind = kind or reason
        super().__init__(f'{self.path}' + (f' [{where}]' if where else '') + f': {reason}')


class DataError(InputError):
    """A training / evaluation data file (or one of its samples) is wrong."""


class ScoreError(InputError):
    """A predictions or annotations file given to the scorer is wrong."""


class ImageError(InputError):
    """An image file that is missing or cannot be decoded. `.path` and `.reason` are kept."""

    def __init__(self, path, reason):
        super().__init__(path, '', reason)
        self.args = (f'cannot load image {self.path!r}: {self.reason}',)

    def __str__(self):
        return self.args[0]


class BoxError(MGLLaVAError, ValueError):
    """Detector boxes that are malformed (wrong shapes, degenerate or out-of-frame boxes)."""


class ResumeError(MGLLaVAError, RuntimeError):
    """Partial outputs that do not belong to this run (other model / data / settings)."""


def require(path, where, obj, *keys, error=InputError):
    """`obj` must be a JSON object with every key in `keys` present and non-empty, else `error`."""
    if not isinstance(obj, dict):
        raise error(path, where, f'expected a JSON object, got {type(obj).__name__}')
    for k in keys:
        if obj.get(k) in (None, ''):
            raise error(path, where, f'missing field {k!r}')
