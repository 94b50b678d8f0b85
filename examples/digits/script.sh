#!/bin/sh
# Classify one handwritten digit (CSV, JSON or image) with Sluice's demo ONNX model and write
# $TMP_OUTPUT_DIR/<input name>.json. Bad input makes the job fail (exit code 2) with the reason.
set -eu

name=$(basename "$INPUT_FILE_PATH")
name=${name%.*}
[ -n "$name" ] || name=digit
output="$TMP_OUTPUT_DIR/$name.json"

# Some images only ship python3.
python=python
command -v python >/dev/null 2>&1 || python=python3

"$python" -m sluice.demo.digits "$INPUT_FILE_PATH" "$output"
label=$(sed -n 's/^{"label": \([0-9]\).*/\1/p' "$output")
echo "classified $(basename "$INPUT_FILE_PATH") as digit $label -> $name.json"
