-- Loaded by busted before every spec file (see .busted).
package.path = "lua/?.lua;lua/?/init.lua;spec/?.lua;" .. package.path
