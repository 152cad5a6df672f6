-- wrk script: a mix of paths, as a page load makes: HTML, CSS, a 304, a range, a 404.
-- wrk -t1 -c64 -d5s -s benches/mixed.lua http://127.0.0.1:7878/
local paths = {
   { path = "/index.html" },
   { path = "/style.css" },
   { path = "/index.html", headers = { ["If-None-Match"] = "*" } },
   { path = "/index.html", headers = { ["Range"] = "bytes=0-99" } },
   { path = "/missing.png" },
}
local i = 0

request = function()
   i = i % #paths + 1
   local p = paths[i]
   return wrk.format("GET", p.path, p.headers)
end
