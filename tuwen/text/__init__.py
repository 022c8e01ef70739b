"""Text channels: the text read in images (OCR), its lexical match with captions (BM25), and
sentence encoders that match the two by meaning."""
