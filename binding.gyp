{
  "targets": [
    {
      "target_name": "tunlb_native",
      "sources": [
        "native/addon.cc",
        "native/tun.cc",
        "native/udp.cc",
        "native/poller.cc",
        "native/packet-socket.cc",
        "native/neighbours.cc"
      ],
      "include_dirs": ["<!(node -p \"require('node-addon-api').include_dir\")"],
      "defines": ["NAPI_VERSION=8", "NAPI_DISABLE_CPP_EXCEPTIONS", "NODE_ADDON_API_DISABLE_DEPRECATED", "_GNU_SOURCE"],
      "cflags_cc": ["-std=c++17", "-O2", "-Wall", "-Wextra"],
      "cflags_cc!": ["-std=gnu++17", "-std=gnu++20"]
    }
  ]
}
