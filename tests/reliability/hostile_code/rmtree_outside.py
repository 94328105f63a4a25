# hostile: rmtree outside (exit 0 would mean the attack worked)
import shutil
shutil.rmtree(TARGET_DIR)
