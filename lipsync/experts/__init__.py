"""The networks that judge generated video, trained by the one loop: the SyncNet expert of LSE
(`sync/`) and the GRID lip reader of WER/CER (`lipread/`), each with its data and objective."""
