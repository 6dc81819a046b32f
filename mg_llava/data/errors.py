"""The error every data problem becomes: it names the file and the sample."""


class DataError(ValueError):
    def __init__(self, path, where, reason, kind=None):
        self.path, self.where, self.reason = path, where, reason
        self.kind = kind or reason  # short category used when skipped samples are counted
        loc = f'{path}' + (f' [{where}]' if where else '')
        super().__init__(f'{loc}: {reason}')
