"""Black-box tests of the real `edge-tail` executable."""
