"""Build wiring: profile loading and validation, graph declaration, the SCons tool and the stage runner."""
