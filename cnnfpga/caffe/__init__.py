"""Caffe model files: our own caffe.proto, readers (text, binary, V1 upgrade), writer, fillers, means."""
