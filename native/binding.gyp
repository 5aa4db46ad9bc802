{
  "targets": [
    {
      "target_name": "stackbd_native",
      "sources": ["src/stackbd_native.c"],
      "cflags": ["-O2", "-Wall", "-Wextra"],
      "defines": ["NAPI_VERSION=8"]
    }
  ]
}
