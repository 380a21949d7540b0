/**
 * The dashboard's HTTP server, on loopback only. It acts with the admin's key,
 * so every request must prove it comes from the page `fleetmesh ui` printed:
 *
 * - a random token, as Jupyter does: in the printed URL's query on the first
 *   load, which trades it for an HttpOnly SameSite=Strict cookie and
 *   redirects to a URL without it; or in the `x-fleetmesh-token` header, for
 *   scripts. Anything else is refused with 403.
 * - a loopback Host header with this server's port, so a web page that points
 *   its own name at 127.0.0.1 (DNS rebinding) is refused;
 * - for a POST carrying the cookie, an Origin header that is this server, so
 *   another site's form or script cannot make the browser act.
 *
 * The static files (index.html, its ES modules and style sheets) are read once at start.
 */
import { timingSafeEqual } from 'node:crypto'
import { readFile } from 'node:fs/promises'
import { createServer, type IncomingMessage, type Server, type ServerResponse } from 'node:http'
import type { AddressInfo } from 'node:net'
import { join } from 'node:path'
import { UsageError } from '../../lib/index.ts'
import type { UiApi } from './api.ts'
import type { UiEvents } from './events.ts'

const STATIC_DIR = join(import.meta.dirname, 'static')
const HTML = 'text/html; charset=utf-8'
const JS = 'text/javascript; charset=utf-8'
const CSS = 'text/css; charset=utf-8'
/** Every file the page loads, by path; nothing else under static/ is served. */
const STATIC_FILES: Record<string, { file: string; type: string }> = {
  '/': { file: 'index.html', type: HTML },
  '/app.js': { file: 'app.js', type: JS },
  '/dom.js': { file: 'dom.js', type: JS },
  '/table.js': { file: 'table.js', type: JS },
  '/detail.js': { file: 'detail.js', type: JS },
  '/panels.js': { file: 'panels.js', type: JS },
  '/style.css': { file: 'style.css', type: CSS },
  '/views.css': { file: 'views.css', type: CSS },
}
const LOOPBACK_HOSTS = new Set(['127.0.0.1', 'localhost', '::1'])
const TOKEN_HEADER = 'x-fleetmesh-token'

/** Everything the page may load or reach: itself, nothing else. */
const SECURITY_HEADERS = {
  'content-security-policy':
    "default-src 'none'; script-src 'self'; style-src 'self'; connect-src 'self'; img-src 'self' data:; base-uri 'none'; form-action 'none'; frame-ancestors 'none'",
  'x-content-type-options': 'nosniff',
  'referrer-policy': 'no-referrer',
  'x-frame-options': 'DENY',
  'cache-control': 'no-store',
}

/** A loopback address to listen on: `127.0.0.1:0`, `localhost:8080`, `[::1]:0`. */
export interface ListenAddress {
  host: string
  port: number
}

/** Parses --listen, refusing any address a machine other than this one could reach. */
export function parseListen(value: string): ListenAddress {
  const m = /^(?:\[([^\]]+)\]|([^:]+)):(\d{1,5})$/.exec(value)
  const host = m?.[1] ?? m?.[2]
  const port = Number(m?.[3])
  if (host === undefined || !Number.isInteger(port) || port > 65535)
    throw new UsageError(
      `--listen takes <host>:<port>, e.g. 127.0.0.1:8080 (0: any free port), got "${value}"`,
    )
  if (!LOOPBACK_HOSTS.has(host))
    throw new UsageError(
      `--listen ${value}: the dashboard acts with your admin key, so it listens on loopback only ` +
        '(127.0.0.1, localhost or [::1]); to open it from another machine, forward the port over SSH ' +
        '(ssh -L 8080:127.0.0.1:8080 <this machine>) and run fleetmesh ui --listen 127.0.0.1:8080 here',
    )
  return { host, port }
}

export interface UiServer {
  /** The URL to open, with the token */
  url: string
  port: number
  close(): Promise<void>
}

export async function startUiServer(
  listen: ListenAddress,
  token: string,
  api: UiApi,
  events: UiEvents,
): Promise<UiServer> {
  const files = new Map<string, { body: Buffer; type: string }>()
  for (const [path, { file, type }] of Object.entries(STATIC_FILES))
    files.set(path, { body: await readFile(join(STATIC_DIR, file)), type })
  let port = listen.port
  const cookieName = () => `fleetmesh_ui_${port}`
  const server: Server = createServer((req, res) => {
    void serve(req, res).catch((err: unknown) => {
      if (!res.headersSent) send(res, 500, { error: { code: 'internal', message: String(err) } })
      else res.destroy()
    })
  })

  const serve = async (req: IncomingMessage, res: ServerResponse): Promise<void> => {
    const host = req.headers.host ?? ''
    if (!allowedHosts(port).has(host.toLowerCase()))
      return refuse(
        res,
        `Host "${host}" is not this dashboard's loopback address; open the URL fleetmesh ui printed`,
      )
    const url = new URL(req.url ?? '/', `http://${host}`)
    const queryToken = url.searchParams.get('token')
    if (req.method === 'GET' && url.pathname === '/' && queryToken !== null) {
      if (!sameToken(queryToken, token)) return refuse(res, 'wrong token; open the URL fleetmesh ui printed')
      // Trade the token for a cookie and drop it from the address bar (and from history).
      res.writeHead(303, {
        ...SECURITY_HEADERS,
        location: '/',
        'set-cookie': `${cookieName()}=${token}; HttpOnly; SameSite=Strict; Path=/`,
      })
      res.end()
      return
    }
    const headerToken = req.headers[TOKEN_HEADER]
    const byHeader = typeof headerToken === 'string' && sameToken(headerToken, token)
    const cookie = cookies(req.headers.cookie).get(cookieName())
    const byCookie = cookie !== undefined && sameToken(cookie, token)
    if (!byHeader && !byCookie)
      return refuse(res, 'no valid token: open the URL fleetmesh ui printed (it carries the token)')
    if (req.method !== 'GET' && req.method !== 'HEAD') {
      const origin = req.headers.origin
      // A cookie rides along with any site's request: only this page's own origin may use it to act.
      if (origin === undefined ? !byHeader : origin !== `http://${host}`)
        return refuse(res, `a ${req.method} from origin ${origin ?? '(none)'} is not this dashboard's`)
    }
    if (url.pathname === '/api/events' && req.method === 'GET') return events.open(res)
    if (url.pathname.startsWith('/api/')) {
      const { status, body } = await api.handle(req, url)
      return send(res, status, body)
    }
    const file = files.get(url.pathname)
    if (file === undefined || req.method !== 'GET') return send(res, 404, { error: { code: 'not-found' } })
    res.writeHead(200, { ...SECURITY_HEADERS, 'content-type': file.type })
    res.end(file.body)
  }

  await new Promise<void>((resolve, reject) => {
    server.once('error', reject)
    server.listen(listen.port, listen.host, () => resolve())
  })
  port = (server.address() as AddressInfo).port
  const urlHost = listen.host === '::1' ? '[::1]' : listen.host
  return {
    url: `http://${urlHost}:${port}/?token=${token}`,
    port,
    close: async () => {
      await events.stop()
      server.closeAllConnections()
      await new Promise<void>((resolve) => server.close(() => resolve()))
    },
  }
}

function allowedHosts(port: number): Set<string> {
  return new Set([`127.0.0.1:${port}`, `localhost:${port}`, `[::1]:${port}`])
}

/** Compared in constant time, so response timing tells nothing about the token. */
function sameToken(given: string, token: string): boolean {
  const a = Buffer.from(given)
  const b = Buffer.from(token)
  return a.length === b.length && timingSafeEqual(a, b)
}

function cookies(header: string | undefined): Map<string, string> {
  const out = new Map<string, string>()
  for (const part of (header ?? '').split(';')) {
    const eq = part.indexOf('=')
    if (eq > 0) out.set(part.slice(0, eq).trim(), part.slice(eq + 1).trim())
  }
  return out
}

function send(res: ServerResponse, status: number, body: unknown): void {
  res.writeHead(status, { ...SECURITY_HEADERS, 'content-type': 'application/json; charset=utf-8' })
  res.end(JSON.stringify(body))
}

function refuse(res: ServerResponse, message: string): void {
  res.writeHead(403, { ...SECURITY_HEADERS, 'content-type': 'text/plain; charset=utf-8' })
  res.end(`403 forbidden: ${message}\n`)
}
