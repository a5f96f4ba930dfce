"""Audio front end: wav I/O and the Kaldi-compatible log-mel fbank."""
