"""Quantization with an accuracy gate: llama.cpp's quantizer on GGUF files into the store, and the eval
that decides whether a quantized model may be served."""
