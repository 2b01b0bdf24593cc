"""Test glue between `kraken model` and olot, an independent ModelPack tool (PyPI `olot`).

    modelpack_olot.py base LAYOUT          an OCI layout of a one-layer multi-arch image, the
                                           base olot adds a model's layers and a ModelPack
                                           manifest to
    modelpack_olot.py select LAYOUT TAG    point the layout's index at olot's ModelPack
                                           manifest alone, tagged TAG (skopeo copies one)
    modelpack_olot.py check LAYOUT TAG DIR check, with olot's own schemas and constants, that
                                           the ModelPack artifact tagged TAG (as skopeo copied
                                           it from Kraken) is valid and its raw layers are the
                                           files of DIR, each at its annotated path

Exits non-zero with a message on the first problem.
"""

import hashlib
import io
import json
import os
import sys
import tarfile

from olot.modelpack import const as modelpack
from olot.modelpack.model_config import Model
from olot.oci.oci_image_manifest import OCIImageManifest

INDEX = "application/vnd.oci.image.index.v1+json"
MANIFEST = "application/vnd.oci.image.manifest.v1+json"


def put(layout, data):
    digest = hashlib.sha256(data).hexdigest()
    with open(os.path.join(layout, "blobs", "sha256", digest), "wb") as f:
        f.write(data)
    return {"digest": "sha256:" + digest, "size": len(data)}


def base(layout):
    os.makedirs(os.path.join(layout, "blobs", "sha256"))
    tar = io.BytesIO()
    with tarfile.open(fileobj=tar, mode="w") as t:
        data = b"base\n"
        info = tarfile.TarInfo("etc/base")
        info.size = len(data)
        t.addfile(info, io.BytesIO(data))
    layer = put(layout, tar.getvalue())
    config = put(layout, json.dumps({
        "architecture": "amd64", "os": "linux",
        "rootfs": {"type": "layers", "diff_ids": [layer["digest"]]},
        "history": [{"created_by": "base"}],
    }).encode())
    manifest = put(layout, json.dumps({
        "schemaVersion": 2, "mediaType": MANIFEST,
        "config": {"mediaType": "application/vnd.oci.image.config.v1+json", **config},
        "layers": [{"mediaType": "application/vnd.oci.image.layer.v1.tar", **layer}],
    }).encode())
    index = put(layout, json.dumps({
        "schemaVersion": 2, "mediaType": INDEX,
        "manifests": [{"mediaType": MANIFEST, **manifest,
                       "platform": {"architecture": "amd64", "os": "linux"}}],
    }).encode())
    with open(os.path.join(layout, "oci-layout"), "w") as f:
        f.write('{"imageLayoutVersion":"1.0.0"}')
    write_index(layout, {"mediaType": INDEX, **index}, "latest")


def write_index(layout, descriptor, tag):
    descriptor = dict(descriptor)
    descriptor["annotations"] = {"org.opencontainers.image.ref.name": tag}
    with open(os.path.join(layout, "index.json"), "w") as f:
        json.dump({"schemaVersion": 2, "manifests": [descriptor]}, f)


def select(layout, tag):
    with open(os.path.join(layout, "index.json")) as f:
        index = json.load(f)
    found = [m for m in index["manifests"]
             if m.get("annotations", {}).get("io.opendatahub.modelcar.manifest.type") == "modelpack"]
    if len(found) != 1:
        sys.exit(f"expected one ModelPack manifest in the index, found {len(found)}")
    m = found[0]
    write_index(layout, {"mediaType": m["mediaType"], "digest": m["digest"], "size": m["size"]}, tag)


def blob(layout, digest):
    algorithm, hex_digest = digest.split(":")
    with open(os.path.join(layout, "blobs", algorithm, hex_digest), "rb") as f:
        return f.read()


def check(layout, tag, model_dir):
    with open(os.path.join(layout, "index.json")) as f:
        index = json.load(f)
    entry = next(m for m in index["manifests"]
                 if m.get("annotations", {}).get("org.opencontainers.image.ref.name") == tag)
    manifest = OCIImageManifest.model_validate_json(blob(layout, entry["digest"]))
    if manifest.artifactType != modelpack.ARTIFACTTYPEMODELMANIFEST:
        sys.exit(f"artifactType {manifest.artifactType!r}")
    if manifest.config.mediaType != modelpack.MEDIATYPEMODELCONFIG:
        sys.exit(f"config media type {manifest.config.mediaType!r}")
    config = Model.model_validate_json(blob(layout, manifest.config.digest))
    known = {v for k, v in vars(modelpack).items() if k.startswith("MEDIATYPE")}
    diff_ids = [d if ":" in d else "sha256:" + d for d in config.modelfs.diffIds]
    if diff_ids != [layer.digest for layer in manifest.layers]:
        sys.exit(f"diffIds {diff_ids} are not the raw layers' digests")
    seen = set()
    for layer in manifest.layers:
        if layer.mediaType not in known:
            sys.exit(f"layer media type {layer.mediaType!r} is not one of olot's ModelPack types")
        path = (layer.annotations or {}).get("org.cncf.model.filepath")
        if path is None:
            sys.exit(f"layer {layer.digest} has no org.cncf.model.filepath")
        with open(os.path.join(model_dir, path), "rb") as f:
            if blob(layout, layer.digest) != f.read():
                sys.exit(f"{path}: the layer's bytes differ from the file")
        seen.add(path)
    files = set()
    for root, _, names in os.walk(model_dir):
        for name in names:
            files.add(os.path.relpath(os.path.join(root, name), model_dir))
    if seen != files:
        sys.exit(f"the artifact holds {sorted(seen)}, the directory {sorted(files)}")
    print(f"ok: {len(seen)} files")


if __name__ == "__main__":
    command, args = sys.argv[1], sys.argv[2:]
    {"base": base, "select": select, "check": check}[command](*args)
