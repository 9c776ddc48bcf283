"""Evaluation of edited clips: identity (`identity`), attribute fidelity with an image-space
classifier (`attributes`, `fidelity`), editing locality (`fidelity`), and the pair/suite runner
with its table and HTML report (`evaluate`)."""
