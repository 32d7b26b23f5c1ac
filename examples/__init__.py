"""A tiny package to copy: your own network and data, searched by import path (docs/own_model.md).

    spfde search --space smoke --set model.name=examples.nets:mobilenet_v2 --set data.name=cifar10
    spfde search --space smoke --set model.name=examples.nets:small_net --set data.name=examples.data:stripes
"""
