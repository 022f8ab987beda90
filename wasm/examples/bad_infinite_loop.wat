;; Deliberately bad: never returns.  Stopped by fuel or by the wall-clock limit.
(module
  (func (export "spin") (result i32)
    (loop $forever (br $forever))
    (i32.const 0)))
