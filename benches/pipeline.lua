-- wrk script: 16 requests per write (HTTP/1.1 pipelining).
-- wrk -t1 -c64 -d5s -s benches/pipeline.lua http://127.0.0.1:7878/ -- 16
init = function(args)
   local depth = tonumber(args[1]) or 16
   local r = {}
   for i = 1, depth do
      r[i] = wrk.format(nil, "/index.html")
   end
   req = table.concat(r)
end

request = function()
   return req
end
