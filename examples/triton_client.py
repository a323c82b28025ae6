"""Upscale an image on a `lightbsr serve` server: python examples/triton_client.py IN.png OUT.png [HOST:PORT]"""

import sys

import cv2
import tritonclient.grpc as grpcclient

client = grpcclient.InferenceServerClient(sys.argv[3] if len(sys.argv) > 3 else "127.0.0.1:8001")
image = cv2.cvtColor(cv2.imread(sys.argv[1]), cv2.COLOR_BGR2RGB)[None]  # (1, H, W, 3) uint8
request = grpcclient.InferInput("image", list(image.shape), "UINT8")
request.set_data_from_numpy(image)
result = client.infer("lightbsr", [request], parameters={"tile": 256})  # parameters: optional
cv2.imwrite(sys.argv[2], cv2.cvtColor(result.as_numpy("upscaled")[0], cv2.COLOR_RGB2BGR))
