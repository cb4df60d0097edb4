"""Example in-process handlers for the configurations in this folder (`handler: handlers.MODULE:FUNCTION`).

esm imports handler modules from the configuration file's folder, so `config/handlers/` is the
`handlers` package for every `config/*.yaml`.
"""
