"""What the Python SDK benchmarks share: a fresh `quern server` on a free
port and a module of tasks on a path of its own, for the worker to import."""
import os, subprocess, tempfile


def server_and_app(binary, module, source):
    """Starts `binary` as a server with a temporary data directory and writes
    `source` as `module`.py in a temporary directory; (the server process,
    its URL, that directory)."""
    data = tempfile.mkdtemp(prefix="quern-bench-")
    server = subprocess.Popen([binary, "server", "--listen", "127.0.0.1:0", "--data", data],
                              stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    url = server.stdout.readline().strip().removeprefix("listening on ")
    mod_dir = tempfile.mkdtemp(prefix="quern-bench-app-")
    with open(os.path.join(mod_dir, f"{module}.py"), "w") as f:
        f.write(source)
    return server, url, mod_dir
