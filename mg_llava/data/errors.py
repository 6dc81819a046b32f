"""The error every data problem becomes: it names the file and the sample."""


class DataError(ValueError):
    def __init__(self, path, where, reason):
        self.path, self.where, self.reason = path, where, reason
        loc = f'{path}' + (f' [{where}]' if where else '')
        super().__init__(f'{loc}: {reason}')
