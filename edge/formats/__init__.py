"""Wire formats: one package per format, each a batch view over its parsed document and a body codec.

Every batch view offers the engine the interface declared in `edge.engine.batch`; errors shared
by all formats are in `errors`, the result of evaluating a body in `evaluated`.
"""
