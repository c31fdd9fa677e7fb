"""Plain FastAPI + uvicorn anchor: the endpoint a team would write by hand.

Accepts the same Open Inference Protocol (V2) JSON as the model servers, validated by a
pydantic model as FastAPI code usually is, and predicts on the event loop.

Usage: python fastapi_server.py --artifact PATH --model-name NAME --port P
"""

from __future__ import annotations

import argparse
from typing import Any

import joblib
import numpy as np
import uvicorn
from fastapi import FastAPI, HTTPException
from pydantic import BaseModel


class TensorIn(BaseModel):
    name: str
    shape: list[int]
    datatype: str
    data: list[float]


class InferRequest(BaseModel):
    inputs: list[TensorIn]


def create_app(model: Any, model_name: str) -> FastAPI:
    app = FastAPI()

    @app.get("/v2/health/ready")
    async def ready() -> dict[str, bool]:
        return {"ready": True}

    @app.post("/v2/models/{name}/infer")
    async def infer(name: str, req: InferRequest) -> dict[str, Any]:
        if name != model_name:
            raise HTTPException(404, f"model {name} not found")
        tensor = req.inputs[0]
        x = np.asarray(tensor.data, dtype=np.float64).reshape(tensor.shape)
        y = model.predict(x)
        return {
            "model_name": model_name,
            "outputs": [
                {"name": "predict", "shape": [len(y)], "datatype": "INT64", "data": y.tolist()}
            ],
        }

    return app


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--artifact", required=True)
    parser.add_argument("--model-name", required=True)
    parser.add_argument("--port", type=int, required=True)
    args = parser.parse_args()
    app = create_app(joblib.load(args.artifact), args.model_name)
    uvicorn.run(app, host="127.0.0.1", port=args.port, workers=1, access_log=False)


if __name__ == "__main__":
    main()
