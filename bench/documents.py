"""Figures for issue 4: extraction throughput through the whole pipeline (release build,
separate xenios-api and xenios-extractor processes, SQLite, private nats-server), peak RSS of
the extractor, and a 100 MB upload with the API's RSS."""
import io, os, random, socket, subprocess, sys, tempfile, time, zipfile, concurrent.futures as cf
import httpx

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), ".."))
BIN = f"{ROOT}/target/release"
KEY = "bench-api-key-0123456789"
SECRET = "bench-jwt-secret-0123456789abcdef"
USER = "11111111-1111-4111-8111-111111111111"

def free_port():
    s = socket.socket(); s.bind(("127.0.0.1", 0)); p = s.getsockname()[1]; s.close(); return p

def words(rng, n):
    vocab = "coaching session client goal progress habit review plan energy sleep focus team growth feedback week month result action insight value".split()
    return " ".join(rng.choice(vocab) for _ in range(n))

def pdf(pages, tag):
    out = bytearray(b"%PDF-1.4\n"); offs = []
    def obj(body):
        offs.append(len(out)); out.extend(f"{len(offs)} 0 obj\n".encode() + body + b"\nendobj\n"); return len(offs)
    font = obj(b"<< /Type /Font /Subtype /Type1 /BaseFont /Helvetica >>")
    rng = random.Random(tag); kids = []
    pages_id = len(offs) + 1 + 2 * pages
    for p in range(pages):
        lines = [f"Document {tag} page {p+1}"] + [words(rng, 12) for _ in range(40)]
        c = "BT /F1 10 Tf 50 760 Td 14 TL\n" + "".join(f"({l}) Tj T*\n" for l in lines) + "ET"
        cid = obj(f"<< /Length {len(c)} >>\nstream\n{c}\nendstream".encode())
        kids.append(obj(f"<< /Type /Page /Parent {pages_id} 0 R /MediaBox [0 0 612 792] /Resources << /Font << /F1 {font} 0 R >> >> /Contents {cid} 0 R >>".encode()))
    assert obj(f"<< /Type /Pages /Kids [{' '.join(f'{k} 0 R' for k in kids)}] /Count {pages} >>".encode()) == pages_id
    cat = obj(f"<< /Type /Catalog /Pages {pages_id} 0 R >>".encode())
    x = len(out); n = len(offs) + 1
    out.extend(f"xref\n0 {n}\n0000000000 65535 f \n".encode())
    for o in offs: out.extend(f"{o:010} 00000 n \n".encode())
    out.extend(f"trailer\n<< /Size {n} /Root {cat} 0 R >>\nstartxref\n{x}\n%%EOF\n".encode())
    return bytes(out)

W = "http://schemas.openxmlformats.org/wordprocessingml/2006/main"
def docx(target_bytes, tag):
    rng = random.Random(tag); paras = [f'<w:p><w:pPr><w:pStyle w:val="Heading1"/></w:pPr><w:r><w:t>Document {tag}</w:t></w:r></w:p>']
    while True:
        paras.append(f"<w:p><w:r><w:t>{words(rng, 30)} {rng.random()}</w:t></w:r></w:p>")
        if len(paras) % 50 == 0:
            data = build_docx(paras)
            if len(data) >= target_bytes: return data

def build_docx(paras):
    b = io.BytesIO()
    with zipfile.ZipFile(b, "w", zipfile.ZIP_DEFLATED) as z:
        z.writestr("[Content_Types].xml", '<?xml version="1.0"?><Types xmlns="http://schemas.openxmlformats.org/package/2006/content-types"><Default Extension="xml" ContentType="application/xml"/><Override PartName="/word/document.xml" ContentType="application/vnd.openxmlformats-officedocument.wordprocessingml.document.main+xml"/></Types>')
        z.writestr("_rels/.rels", '<?xml version="1.0"?><Relationships xmlns="http://schemas.openxmlformats.org/package/2006/relationships"><Relationship Id="rId1" Type="http://schemas.openxmlformats.org/officeDocument/2006/relationships/officeDocument" Target="word/document.xml"/></Relationships>')
        z.writestr("word/document.xml", f'<?xml version="1.0"?><w:document xmlns:w="{W}"><w:body>{"".join(paras)}</w:body></w:document>')
    return b.getvalue()

def hwm(pid):
    for line in open(f"/proc/{pid}/status"):
        if line.startswith("VmHWM"): return int(line.split()[1]) // 1024
def rss(pid):
    for line in open(f"/proc/{pid}/status"):
        if line.startswith("VmRSS"): return int(line.split()[1]) // 1024

def main():
    n = int(sys.argv[1]) if len(sys.argv) > 1 else 100
    conc = int(sys.argv[2]) if len(sys.argv) > 2 else 8
    d = tempfile.mkdtemp()
    nats_port, api_port, m1 = free_port(), free_port(), free_port()
    procs = [subprocess.Popen(["nats-server", "-a", "127.0.0.1", "-p", str(nats_port), "-js", "-sd", f"{d}/nats"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)]
    env = dict(os.environ, DATABASE_URL=f"sqlite://{d}/x.db", NATS_URL=f"nats://127.0.0.1:{nats_port}",
               XENIOS_BACKEND_API_KEY=KEY, SUPABASE_JWT_SECRET=SECRET, XENIOS_API_ADDR=f"127.0.0.1:{api_port}",
               XENIOS_METRICS_ADDR=f"127.0.0.1:{m1}", LOG_LEVEL="warn", XENIOS__CONSUMER__SERVE_ECHO="false", XENIOS__RATE_LIMIT__ENABLED="false",
               XENIOS__JOBS__EXTRACTION__CONCURRENCY=str(conc))
    try:
        time.sleep(0.5)
        api = subprocess.Popen([f"{BIN}/xenios-api"], env=env); procs.append(api)
        base = f"http://127.0.0.1:{api_port}"
        for _ in range(200):
            try:
                if httpx.get(f"{base}/health/ready").status_code == 200: break
            except Exception: pass
            time.sleep(0.1)
        ext = subprocess.Popen([f"{BIN}/xenios-extractor"], env=env); procs.append(ext)
        token = subprocess.check_output([f"{BIN}/xenios", "token", "--user", USER], env=env).decode().strip()
        h = {"X-API-Key": KEY, "Authorization": f"Bearer {token}"}
        c = httpx.Client(base_url=base, headers=h, timeout=120)
        for kind, make in [("pdf20", lambda i: pdf(20, f"p{i}")), ("docx50k", lambda i: docx(50_000, f"d{i}"))]:
            docs = [make(i) for i in range(n)]
            ids = []
            for i, data in enumerate(docs):
                r = c.post("/api/v1/files", files={"file": (f"{kind}-{i}", data)}); r.raise_for_status(); ids.append(r.json()["file_id"])
            mb = sum(map(len, docs)) / 1e6
            t0 = time.time()
            jobs = [c.post("/api/v1/jobs", json={"kind": "extraction", "input": {"file_id": f}}).json()["job_id"] for f in ids]
            pending = set(jobs)
            while pending:
                for j in list(pending):
                    s = c.get(f"/api/v1/jobs/{j}").json()
                    if s["status"] in ("succeeded", "failed"):
                        assert s["status"] == "succeeded", s
                        assert not s["result"]["cached"]
                        pending.discard(j)
                time.sleep(0.02)
            dt = time.time() - t0
            print(f"{kind}: {n} docs, {len(docs[0])/1e3:.1f} KB each, {mb:.1f} MB in {dt:.2f} s -> {n/dt:.1f} docs/s, {mb/dt:.2f} MB/s (submit to last result, {conc} concurrent); extractor peak RSS {hwm(ext.pid)} MiB", flush=True)
        big = f"{d}/big.bin"
        with open(big, "wb") as f:
            chunk = os.urandom(1 << 20)
            for _ in range(100): f.write(chunk)
        before = rss(api.pid)
        t0 = time.time()
        out = subprocess.check_output(["curl", "-s", "-H", f"X-API-Key: {KEY}", "-H", f"Authorization: Bearer {token}", "-F", f"file=@{big}", f"{base}/api/v1/files"])
        dt = time.time() - t0
        print(f"upload 100 MiB: {dt:.2f} s -> {104.8576/dt:.1f} MB/s; API RSS {before} MiB before, peak {hwm(api.pid)} MiB (VmHWM over the whole run), {rss(api.pid)} MiB after; answer {out.decode()[:200]}", flush=True)
    finally:
        for p in reversed(procs): p.terminate()
        for p in procs: p.wait()

main()
