# hostile: env secret (exit 0 would mean the attack worked)
import os, sys
sys.exit(0 if os.environ.get('FEM_TEST_SECRET') else 1)
