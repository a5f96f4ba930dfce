"""EAT self-supervised pre-training (data2vec 2.0 style): masking, objective, EMA teacher, train step."""
