;; Numeric exports, called as {"export": "add", "args": [1, 2]}.
(module
  (func (export "add") (param $a i32) (param $b i32) (result i32)
    (i32.add (local.get $a) (local.get $b)))
  (func (export "mul") (param $a f64) (param $b f64) (result f64)
    (f64.mul (local.get $a) (local.get $b))))
