# hostile: relative path escape (exit 0 would mean the attack worked)
open('../../escaped_by_sandbox.txt', 'w').write('pwned')
