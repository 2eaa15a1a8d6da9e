"""The 4G modem: AT dialogue (at), pure reply parsers (parse), one status reading (status), the pty
simulator (simulator), the recovery ladder (supervision) and `speaker-node modem` (cli).

Import the submodule you need; this package imports nothing so that the pure parts stay cheap.
"""
