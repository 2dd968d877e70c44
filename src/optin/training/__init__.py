"""Training: the classifier, x-vector and obfuscator loops, their data and run plumbing."""
